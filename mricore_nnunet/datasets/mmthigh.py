"""MMThigh thigh muscle MRI into an nnU-Net task, from a generic paired-folder layout.

The layout of the MMThigh release is not known to this project, so the converter expects the
documented generic layout that any release can be copied into::

    SOURCE_DIR/
        images/<case><ending>    one MRI volume per case (.nii.gz, .nii, .mha, .mhd, .nrrd)
        labels/<case><ending>    its label map, same name, same voxel grid

By default every non-zero label value becomes 1 (thigh muscle). To keep individual muscles, pass
`label_names` ({task label name: value in the release}); the names get the values 1, 2, ... in the
given order and any other release value fails the conversion.

NOTE: the release name, its label values and its case count are unverified; check the source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .common import LabelMap, TaskMetadata, convert_folders, resolve_dataset_id

RELEASE = "MMThigh"
DEFAULT_DATASET_ID = 509


def task_metadata(label_names: Mapping[str, int] | None = None) -> TaskMetadata:
    labels = {"background": 0, **_task_labels(label_names)}
    return TaskMetadata(
        name="MMThigh",
        channel_names={"0": "MRI"},
        labels=labels,
        description="Thigh muscle MRI (MMThigh), converted from the generic images/ + labels/ layout.",
        reference="MMThigh thigh muscle MRI dataset as evaluated in MRI-CORE (arXiv 2506.12186); check the source",
        licence="check the source",
        release="generic images/ + labels/ layout",
    )


def convert_mmthigh(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None, *,
                    label_names: Mapping[str, int] | None = None, overwrite: bool = False) -> Path:
    """Convert thigh MRI in the generic layout; see the module documentation for `label_names`."""
    source = Path(source_dir)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_folders(source / "images", source / "labels", out_raw, dataset_id,
                           task_metadata(label_names), generic_label_map(label_names), overwrite=overwrite)


def generic_label_map(label_names: Mapping[str, int] | None) -> LabelMap:
    """Return the map for a generic release: all foreground to 1, or the named release values to 1, 2, ..."""
    if label_names is None:
        return LabelMap.any_foreground()
    mapping = {0: 0}
    mapping.update({int(value): index for index, value in enumerate(label_names.values(), start=1)})
    return LabelMap(mapping)


def _task_labels(label_names: Mapping[str, int] | None) -> dict[str, int]:
    if label_names is None:
        return {"muscle": 1}
    if not label_names or 0 in label_names.values() or "background" in label_names:
        raise ValueError(f"label_names {dict(label_names)} must name the foreground values only: give at least "
                         f"one name, and leave out background and the value 0.")
    return {name: index for index, name in enumerate(label_names, start=1)}
