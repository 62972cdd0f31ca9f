"""Converters from public MRI segmentation releases to nnU-Net v2 raw datasets.

Each converter takes the folder of a release that the user has already downloaded and an
`nnUNet_raw` folder, and writes `DatasetNNN_Name/{imagesTr,labelsTr,dataset.json}`. Nothing is
downloaded. `TASKS` lists the tasks by the name the `mricore_nnunet convert` command uses, and
`convert_task` runs one of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from . import amos, hvsmr, isbi_prostate, liverhccseg, mmthigh, piano, qin_prostate, spider
from .common import (CasePair, ConversionError, LabelMap, ReleaseLayoutError, TaskMetadata, convert_pairs,
                     convert_paired_folders, sanitise_case_id)


@dataclass(frozen=True)
class ConverterTask:
    """One task that `convert_task` can write: its converter, default dataset id and dataset.json fields."""

    converter: Callable[..., Path]
    default_dataset_id: int
    metadata: TaskMetadata
    summary: str


TASKS: dict[str, ConverterTask] = {
    "amos-liver": ConverterTask(
        partial(amos.convert_amos, organ="liver"), amos.DEFAULT_DATASET_IDS["liver"],
        amos.task_metadata("liver"), "AMOS 2022 MRI, liver (binary)"),
    "amos-pancreas": ConverterTask(
        partial(amos.convert_amos, organ="pancreas"), amos.DEFAULT_DATASET_IDS["pancreas"],
        amos.task_metadata("pancreas"), "AMOS 2022 MRI, pancreas (binary)"),
    "amos-spleen": ConverterTask(
        partial(amos.convert_amos, organ="spleen"), amos.DEFAULT_DATASET_IDS["spleen"],
        amos.task_metadata("spleen"), "AMOS 2022 MRI, spleen (binary)"),
    "isbi-prostate": ConverterTask(
        isbi_prostate.convert_isbi_prostate, isbi_prostate.DEFAULT_DATASET_ID, isbi_prostate.METADATA,
        "NCI-ISBI 2013 prostate, whole prostate (binary)"),
    "qin-prostate": ConverterTask(
        qin_prostate.convert_qin_prostate, qin_prostate.DEFAULT_DATASET_ID, qin_prostate.METADATA,
        "QIN-PROSTATE-Repeatability, whole prostate (binary)"),
    "spider": ConverterTask(
        spider.convert_spider, spider.DEFAULT_DATASET_ID, spider.METADATA,
        "SPIDER lumbar spine: vertebrae, spinal canal, discs"),
    "hvsmr-chambers": ConverterTask(
        partial(hvsmr.convert_hvsmr, structures="chambers"), hvsmr.DEFAULT_DATASET_IDS["chambers"],
        hvsmr.task_metadata("chambers"), "HVSMR-2.0 heart chambers: LV, RV, LA, RA"),
    "hvsmr-vessels": ConverterTask(
        partial(hvsmr.convert_hvsmr, structures="vessels"), hvsmr.DEFAULT_DATASET_IDS["vessels"],
        hvsmr.task_metadata("vessels"), "HVSMR-2.0 great vessels: aorta, pulmonary artery, SVC, IVC"),
    "mmthigh": ConverterTask(
        mmthigh.convert_mmthigh, mmthigh.DEFAULT_DATASET_ID, mmthigh.task_metadata(),
        "MMThigh thigh muscle (generic images/ + labels/ layout)"),
    "piano": ConverterTask(
        piano.convert_piano, piano.DEFAULT_DATASET_ID, piano.METADATA,
        "PIANO hand bone (generic images/ + labels/ layout)"),
    "liverhccseg": ConverterTask(
        liverhccseg.convert_liverhccseg, liverhccseg.DEFAULT_DATASET_ID, liverhccseg.METADATA,
        "LiverHccSeg liver tumour (binary)"),
    "hvsmr2016": ConverterTask(
        hvsmr.convert_hvsmr2016, hvsmr.DEFAULT_DATASET_IDS["hvsmr2016"], hvsmr.METADATA_2016,
        "HVSMR 2016: myocardium, blood pool (not one of the MRI-CORE tasks)"),
}


def convert_task(task: str, source_dir: str | os.PathLike, out_raw: str | os.PathLike,
                 dataset_id: int | None = None, *, overwrite: bool = False) -> Path:
    """Convert the release in `source_dir` for `task` (a key of TASKS) and return the dataset folder.

    Without `dataset_id` the task's default id (TASKS[task].default_dataset_id) is used.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {', '.join(TASKS)}.")
    entry = TASKS[task]
    return entry.converter(source_dir, out_raw, dataset_id=dataset_id, overwrite=overwrite)


__all__ = [
    "TASKS",
    "CasePair",
    "ConversionError",
    "ConverterTask",
    "LabelMap",
    "ReleaseLayoutError",
    "TaskMetadata",
    "convert_paired_folders",
    "convert_pairs",
    "convert_task",
    "sanitise_case_id",
]
