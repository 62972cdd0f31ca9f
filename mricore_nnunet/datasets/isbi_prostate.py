"""NCI-ISBI 2013 prostate challenge (ISBI-MR prostate) into a binary whole-prostate task.

The release has two parts. The T2-weighted DICOM series are on TCIA, in the collections
PROSTATE-DIAGNOSIS and Prostate-3T, with patients named like ProstateDx-01-0001 and
Prostate3T-01-0001. The challenge's NRRD label files, one per patient and named after it, are split
into Training, Leaderboard and Test folders. This converter assumes the two parts are put side by side::

    SOURCE_DIR/
        images/<PatientID>.nii.gz    the T2 series converted to NIfTI (for example with dcm2niix),
          or images/<PatientID>/     the patient's TCIA folder holding exactly one DICOM series
        labels/**/<PatientID>.nrrd   the challenge labels, in any subfolders (Training/, Leaderboard/, Test/)

Label values in the NRRD files: 1 = central gland, 2 = peripheral zone. Both become label 1
(prostate). Images without a label are skipped, because TCIA downloads may hold extra patients.

NOTE: this layout is an assumption, not the literal release tree. The DICOM branch has not been run
on the real series, so check a few converted cases in a viewer.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import (LabelMap, TaskMetadata, convert_pairs, index_image_files, make_case_pairs, pair_by_name,
                     require_folder, resolve_dataset_id)

RELEASE = "NCI-ISBI 2013 prostate"
DEFAULT_DATASET_ID = 504
SOURCE_LABELS = {"central gland": 1, "peripheral zone": 2}

METADATA = TaskMetadata(
    name="ISBIProstate",
    channel_names={"0": "T2"},
    labels={"background": 0, "prostate": 1},
    description="NCI-ISBI 2013 prostate challenge, T2-weighted MRI; central gland (1) and peripheral zone (2) "
                "of the challenge labels merged into one prostate label.",
    reference="Bloch et al., NCI-ISBI 2013 Challenge: Automated Segmentation of Prostate Structures, The Cancer "
              "Imaging Archive (2015), https://www.cancerimagingarchive.net",
    licence="TCIA data usage policy (CC BY 3.0 as far as known); check the source",
    release="TCIA PROSTATE-DIAGNOSIS and Prostate-3T DICOM series with the NCI-ISBI 2013 NRRD labels",
)


def convert_isbi_prostate(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None,
                          *, overwrite: bool = False) -> Path:
    """Convert the NCI-ISBI 2013 prostate cases laid out as in the module documentation."""
    source = Path(source_dir)
    images_dir = require_folder(source / "images", "images/<PatientID>.nii.gz or images/<PatientID>/ (DICOM)",
                                RELEASE)
    labels_dir = require_folder(source / "labels", "labels/**/<PatientID>.nrrd (the challenge labels)", RELEASE)
    images = index_image_files(images_dir, dicom_folders=True)
    labels = index_image_files(labels_dir, recursive=True)
    triples = pair_by_name(images, labels, RELEASE, require_label=False)
    label_map = LabelMap.binary(SOURCE_LABELS.values(), unlisted_value=None)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_pairs(make_case_pairs(triples), out_raw, dataset_id, METADATA, label_map, overwrite=overwrite)
