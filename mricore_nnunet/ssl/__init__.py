"""Self-supervised pre-training of the MRI-CORE encoder on unlabelled MRI, in the DINOv2 family.

Entry point: `pretrain(PretrainConfig(...))`, or `mricore_nnunet pretrain` on the command line.
"""

from .config import PretrainConfig
from .data import SliceIndex, find_nifti_files
from .trainer import NonFiniteLossError, PretrainResult, pretrain

__all__ = ["NonFiniteLossError", "PretrainConfig", "PretrainResult", "SliceIndex", "find_nifti_files", "pretrain"]
