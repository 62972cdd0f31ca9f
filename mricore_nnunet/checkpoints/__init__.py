"""Reading, converting and writing encoder checkpoints: the only code that opens checkpoint files.

Supported layouts, detected automatically:

- `mricore_dinov2`: the official MRI-CORE release, a DINOv2 teacher/student around a SAM ViT
  backbone, without neck. `neck_checkpoint=` can supply the neck from SAM.
- `sam`: Segment Anything (ViT-B and fine-tunes), image encoder only.
- `mricore_nnunet`: this package's own file, with architecture metadata.
- `timm`: a timm VisionTransformerSAM state dict.
- `nnunet`: an nnU-Net v2 training checkpoint of an MRI-CORE network, to reuse a fine-tuned encoder.

Loading is strict: each encoder tensor is matched, resized or reported as freshly initialised,
and each unused entry of the file is reported with its reason (see `LoadReport`).
"""

from .base import LAYOUTS, CheckpointError, LoadedCheckpoint
from .building import build_encoder_from_checkpoint, infer_preset
from .inspection import inspect_checkpoint
from .loading import LoadReport, load_encoder_weights
from .native import save_encoder_checkpoint
from .reading import file_sha256, read_checkpoint

__all__ = [
    "LAYOUTS",
    "CheckpointError",
    "LoadReport",
    "LoadedCheckpoint",
    "build_encoder_from_checkpoint",
    "file_sha256",
    "infer_preset",
    "inspect_checkpoint",
    "load_encoder_weights",
    "read_checkpoint",
    "save_encoder_checkpoint",
]
