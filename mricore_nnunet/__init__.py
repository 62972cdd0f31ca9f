"""MRI-CORE encoder in nnU-Net v2."""
