"""SPIDER lumbar spine MRI (Zenodo record 10159290) into a three-class task.

Assumed layout of the release (images.zip and masks.zip extracted side by side)::

    SOURCE_DIR/
        images/<patient>_<sequence>.mha    sagittal series; sequence is t1, t2 or t2_SPACE
        masks/<patient>_<sequence>.mha     label map with the same name

Label values of the masks: 1 to 25 = individual vertebrae, 100 = spinal canal, 201 to 225 =
individual intervertebral discs. The task merges the instances into three classes: vertebrae -> 1,
spinal canal -> 2, intervertebral discs -> 3. Any other value makes the conversion fail.

Each series becomes one case named SPIDER_<patient>_<sequence>, so the T1 and T2 series of one
patient are separate cases. NOTE: nnU-Net's default random 5-fold split can put them in different
folds; write splits_final.json grouped by patient for a leakage-free cross-validation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from .common import (LabelMap, TaskMetadata, convert_pairs, index_image_files, make_case_pairs, pair_by_name,
                     require_folder, resolve_dataset_id)

logger = logging.getLogger(__name__)

RELEASE = "SPIDER"
DEFAULT_DATASET_ID = 506
SEQUENCES = ("t1", "t2", "t2_SPACE")
VERTEBRA_VALUES = range(1, 26)
SPINAL_CANAL_VALUE = 100
DISC_VALUES = range(201, 226)

METADATA = TaskMetadata(
    name="SPIDERSpine",
    channel_names={"0": "MRI"},
    labels={"background": 0, "vertebrae": 1, "spinal_canal": 2, "intervertebral_discs": 3},
    description="SPIDER lumbar spine MRI (sagittal T1, T2 and T2 SPACE series); vertebra instances 1-25 -> 1, "
                "spinal canal 100 -> 2, disc instances 201-225 -> 3.",
    reference="van der Graaf et al., Lumbar spine segmentation in MR images: a dataset and a public benchmark, "
              "Scientific Data 11, 264 (2024); https://zenodo.org/records/10159290",
    licence="CC BY 4.0 as listed on the Zenodo record; check the source",
    release="images.zip and masks.zip of Zenodo record 10159290",
)


def label_map() -> LabelMap:
    mapping = {0: 0, SPINAL_CANAL_VALUE: 2}
    mapping.update({value: 1 for value in VERTEBRA_VALUES})
    mapping.update({value: 3 for value in DISC_VALUES})
    return LabelMap(mapping)


def convert_spider(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None,
                   *, sequences: Iterable[str] = SEQUENCES, overwrite: bool = False) -> Path:
    """Convert the SPIDER series of the given sequences (default all: t1, t2, t2_SPACE)."""
    sequences = tuple(sequences)
    unknown = sorted(set(sequences) - set(SEQUENCES))
    if unknown:
        raise ValueError(f"Unknown SPIDER sequence(s) {unknown}; expected a subset of {list(SEQUENCES)}.")
    source = Path(source_dir)
    images_dir = require_folder(source / "images", "images/<patient>_<sequence>.mha", RELEASE)
    masks_dir = require_folder(source / "masks", "masks/<patient>_<sequence>.mha", RELEASE)
    all_images = index_image_files(images_dir)
    unnamed = sorted(key for key in all_images if _sequence(key) is None)
    if unnamed:
        logger.warning("Skipping %d file(s) in %s whose names end in no known sequence (%s): %s", len(unnamed),
                       images_dir, ", ".join(SEQUENCES), ", ".join(unnamed))
    images = {key: path for key, path in all_images.items() if _sequence(key) in sequences}
    masks = {key: path for key, path in index_image_files(masks_dir).items() if _sequence(key) in sequences}
    triples = pair_by_name(images, masks, RELEASE)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_pairs(make_case_pairs(triples, prefix="SPIDER_"), out_raw, dataset_id, METADATA, label_map(),
                         overwrite=overwrite)


def _sequence(case_name: str) -> str | None:
    """Return the sequence of a file name like 12_t2_SPACE, or None when it names no known sequence."""
    _, _, sequence = case_name.partition("_")
    return sequence if sequence in SEQUENCES else None
