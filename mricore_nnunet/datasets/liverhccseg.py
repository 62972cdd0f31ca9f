"""LiverHccSeg (TCIA) into a binary hepatocellular carcinoma (tumour) task.

LiverHccSeg provides liver and tumour segmentations by two radiologists on co-registered multiphasic
contrast-enhanced MRI of TCGA-LIHC patients: 17 cases with liver and 14 cases with tumour
segmentations (data article: https://pmc.ncbi.nlm.nih.gov/articles/PMC10587725). The images come as
DICOM from TCIA. This converter
assumes the user has exported one phase and one rater's tumour masks to NIfTI::

    SOURCE_DIR/
        images/<case>.nii.gz    one contrast phase per case (or images/<case>/ with one DICOM series)
        labels/<case>.nii.gz    that rater's tumour mask on the same grid

Every non-zero label value becomes 1 (tumour), so several lesions labelled 1, 2, ... are merged.
Cases without a tumour segmentation must be left out of labels/ and images/.

NOTE: which phase and which rater MRI-CORE used is not known here; the layout above is an assumption.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import LabelMap, TaskMetadata, convert_folders, resolve_dataset_id

RELEASE = "LiverHccSeg"
DEFAULT_DATASET_ID = 511

METADATA = TaskMetadata(
    name="LiverHccSegTumour",
    channel_names={"0": "MRI"},
    labels={"background": 0, "tumour": 1},
    description="LiverHccSeg multiphasic contrast-enhanced liver MRI (one phase), hepatocellular carcinoma "
                "segmented by one rater; every non-zero label value merged into the tumour label.",
    reference="LiverHccSeg data article, https://pmc.ncbi.nlm.nih.gov/articles/PMC10587725; images and "
              "segmentations on The Cancer Imaging Archive",
    licence="TCIA data usage policy; check the source",
    release="TCIA LiverHccSeg, exported to NIfTI by the user",
)


def convert_liverhccseg(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None,
                        *, overwrite: bool = False) -> Path:
    """Convert exported LiverHccSeg tumour cases laid out as in the module documentation."""
    source = Path(source_dir)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_ID)
    return convert_folders(source / "images", source / "labels", out_raw, dataset_id,
                           METADATA, LabelMap.any_foreground(), dicom_images=True, overwrite=overwrite)
