"""AMOS 2022 (MRI part) into three binary nnU-Net tasks: liver, pancreas or spleen.

Assumed layout of the release (the `amos22` folder extracted from `amos22.zip`, Zenodo record 7262581)::

    amos22/
        dataset.json                 15-class label names, {"0": "background", "1": "spleen", ...}
        imagesTr/amos_XXXX.nii.gz    training images, CT and MRI
        labelsTr/amos_XXXX.nii.gz
        imagesVa/amos_XXXX.nii.gz    validation images, labelled in the public release
        labelsVa/amos_XXXX.nii.gz
        imagesTs/                    test images without labels (not used)

Cases with a numeric id of 500 or more are MRI, and lower ids are CT. The 15 label values are:

    1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach,
    8 aorta, 9 inferior vena cava, 10 pancreas, 11 right adrenal gland, 12 left adrenal gland,
    13 duodenum, 14 bladder, 15 prostate/uterus

Each task keeps one organ as label 1 and makes every other organ
background. When the release's dataset.json is present, the organ name of the chosen value is
checked against it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from .common import (ConversionError, LabelMap, TaskMetadata, convert_pairs, index_image_files, make_case_pairs,
                     pair_by_name, require_folder, resolve_dataset_id)

logger = logging.getLogger(__name__)

RELEASE = "AMOS 2022"
FIRST_MRI_ID = 500
ORGAN_VALUES = {"liver": 6, "pancreas": 10, "spleen": 1}
TASK_NAMES = {"liver": "AMOSLiver", "pancreas": "AMOSPancreas", "spleen": "AMOSSpleen"}
DEFAULT_DATASET_IDS = {"liver": 501, "pancreas": 502, "spleen": 503}

_CASE_NAME = re.compile(r"^amos_(\d{4})$")


def task_metadata(organ: str) -> TaskMetadata:
    _check_organ(organ)
    return TaskMetadata(
        name=TASK_NAMES[organ],
        channel_names={"0": "MRI"},
        labels={"background": 0, organ: 1},
        description=f"AMOS 2022 abdominal MRI (case ids >= {FIRST_MRI_ID}), {organ} as a binary task "
                    f"(AMOS label value {ORGAN_VALUES[organ]}; all other organs are background).",
        reference="Ji et al., AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile Medical Image "
                  "Segmentation, NeurIPS 2022 Datasets and Benchmarks; https://amos22.grand-challenge.org; "
                  "https://zenodo.org/records/7262581",
        licence="CC BY 4.0 as listed on the Zenodo record; check the source",
        release="amos22.zip (Zenodo record 7262581)",
        extra={"source_label_value": ORGAN_VALUES[organ]},
    )


def convert_amos(source_dir: str | os.PathLike, out_raw: str | os.PathLike, organ: str,
                 dataset_id: int | None = None, *, include_validation: bool = True,
                 overwrite: bool = False) -> Path:
    """Convert the labelled AMOS 2022 MRI cases into a binary task for `organ` (liver, pancreas, spleen).

    With `include_validation` the labelled imagesVa/labelsVa cases are added to the training cases.
    Returns the written dataset folder.
    """
    _check_organ(organ)
    source = Path(source_dir)
    require_folder(source, "the extracted amos22 folder", RELEASE)
    _check_release_label_name(source, organ)

    triples = []
    splits = [("imagesTr", "labelsTr")] + ([("imagesVa", "labelsVa")] if include_validation else [])
    for images_name, labels_name in splits:
        images_dir = require_folder(source / images_name, f"{images_name}/amos_XXXX.nii.gz", RELEASE)
        labels_dir = require_folder(source / labels_name, f"{labels_name}/amos_XXXX.nii.gz", RELEASE)
        images = {key: path for key, path in index_image_files(images_dir).items() if _is_mri(key)}
        labels = {key: path for key, path in index_image_files(labels_dir).items() if _is_mri(key)}
        triples.extend(pair_by_name(images, labels, RELEASE))
    logger.info("Found %d labelled AMOS MRI cases", len(triples))

    label_map = LabelMap.binary([ORGAN_VALUES[organ]], unlisted_value=0)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_IDS[organ])
    return convert_pairs(make_case_pairs(triples), out_raw, dataset_id, task_metadata(organ), label_map,
                         overwrite=overwrite)


def _check_organ(organ: str) -> None:
    if organ not in ORGAN_VALUES:
        raise ValueError(f"Unknown AMOS organ {organ!r}; expected one of {', '.join(ORGAN_VALUES)}.")


def _is_mri(case_name: str) -> bool:
    match = _CASE_NAME.match(case_name)
    return match is not None and int(match.group(1)) >= FIRST_MRI_ID


def _check_release_label_name(source: Path, organ: str) -> None:
    """Raise ConversionError when the release's dataset.json names another organ at the organ's value."""
    json_path = source / "dataset.json"
    if not json_path.is_file():
        logger.info("No dataset.json in %s, so the AMOS label values are not cross-checked", source)
        return
    try:
        labels = json.loads(json_path.read_text(encoding="utf-8")).get("labels", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ConversionError(f"Invalid {json_path}: {error}. Re-extract it from amos22.zip.") from error
    # The AMOS release maps values to names ({"6": "liver"}), as nnU-Net v1 and MSD files do.
    name = str(labels.get(str(ORGAN_VALUES[organ]), ""))
    if organ not in name.lower():
        raise ConversionError(
            f"{json_path} names label value {ORGAN_VALUES[organ]} {name!r}, but this converter expects "
            f"{organ!r} there. The release uses another label order than the AMOS 2022 release this converter "
            f"was written for: check the release before converting.")
