"""QIN-PROSTATE-Repeatability (TCIA) into a binary whole-prostate task.

The TCIA collection contains multiparametric prostate MRI (two visits per patient) as DICOM, with
segmentations stored as DICOM SEG objects. Neither format is read here directly, because DICOM SEG
needs an extra converter (for example dcmqi's segimage2itkimage). This converter assumes the user
has exported the T2-weighted series and the whole-gland segmentation per visit::

    SOURCE_DIR/
        images/<case>.nii.gz    T2-weighted image (or images/<case>/ with one DICOM series)
        labels/<case>.nii.gz    whole-gland mask on the same grid, 0 = background, 1 = prostate

`<case>` is any name, for example <PatientID>_<StudyDate>. Label values other than 0 and 1 make the
conversion fail, so that a multi-segment export (peripheral zone, lesions) is not merged by accident.

NOTE: which segments and sequences the MRI-CORE evaluation used is not known here; this converter
assumes whole gland on T2.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import LabelMap, TaskMetadata, convert_folders, resolve_dataset_id

RELEASE = "QIN-PROSTATE-Repeatability"
DEFAULT_DATASET_ID = 505

METADATA = TaskMetadata(
    name="QINProstate",
    channel_names={"0": "T2"},
    labels={"background": 0, "prostate": 1},
    description="QIN-PROSTATE-Repeatability (TCIA), T2-weighted MRI with the whole-gland segmentation exported "
                "from DICOM SEG as a binary mask.",
    reference="Fedorov et al., QIN-PROSTATE-Repeatability collection, The Cancer Imaging Archive, "
              "https://www.cancerimagingarchive.net",
    licence="TCIA data usage policy; check the source",
    release="TCIA QIN-PROSTATE-Repeatability, exported to NIfTI by the user",
)


def convert_qin_prostate(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None,
                         *, overwrite: bool = False) -> Path:
    """Convert exported QIN-PROSTATE-Repeatability cases laid out as in the module documentation."""
    source = Path(source_dir)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_folders(source / "images", source / "labels", out_raw, dataset_id,
                           METADATA, LabelMap.identity([0, 1]), dicom_images=True, overwrite=overwrite)
