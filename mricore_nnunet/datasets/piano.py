"""PIANO hand MRI into a binary hand-bone task, from a generic paired-folder layout.

PIANO (Li et al., "PIANO: A Parametric Hand Bone Model from Magnetic Resonance Imaging", IJCAI 2021)
provides hand MRI with bone annotations. Its file layout is not known to this project, so the
converter expects the documented generic layout that the release can be copied into::

    SOURCE_DIR/
        images/<case><ending>    one hand MRI volume per case (.nii.gz, .nii, .mha, .mhd, .nrrd)
        labels/<case><ending>    its bone label map, same name, same voxel grid

Every non-zero label value becomes 1 (bone), so per-bone labels are merged.

NOTE: whether MRI-CORE evaluated PIANO as one bone class or per bone, and the public case count,
are unverified; check the source.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import LabelMap, TaskMetadata, convert_folders, resolve_dataset_id

RELEASE = "PIANO"
DEFAULT_DATASET_ID = 510

METADATA = TaskMetadata(
    name="PIANOHand",
    channel_names={"0": "MRI"},
    labels={"background": 0, "bone": 1},
    description="PIANO hand MRI; every non-zero label value of the release merged into one bone label.",
    reference="Li et al., PIANO: A Parametric Hand Bone Model from Magnetic Resonance Imaging, IJCAI 2021 "
              "(citation unverified; check the source)",
    licence="check the source",
    release="generic images/ + labels/ layout",
)


def convert_piano(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None, *,
                  overwrite: bool = False) -> Path:
    """Convert PIANO hand MRI copied into the generic layout of the module documentation."""
    source = Path(source_dir)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_folders(source / "images", source / "labels", out_raw, dataset_id,
                           METADATA, LabelMap.any_foreground(), overwrite=overwrite)
