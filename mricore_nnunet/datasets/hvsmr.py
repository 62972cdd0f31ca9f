"""HVSMR whole-heart MRI of congenital heart disease: HVSMR-2.0 chambers and vessels, and HVSMR 2016.

The chamber and vessel tasks need HVSMR-2.0 (Pace et al., Scientific Data 2024: 60 scans with masks
of 4 chambers and 4 great vessels). Assumed layout, searched in SOURCE_DIR and its subfolders::

    pat<N>_orig.nii.gz, pat<N>_orig_seg.nii.gz          full field of view (variant "orig")
    pat<N>_cropped.nii.gz, pat<N>_cropped_seg.nii.gz    cropped around the heart (variant "cropped")

Assumed HVSMR-2.0 label values: 1 LV, 2 RV, 3 LA, 4 RA, 5 aorta, 6 pulmonary artery, 7 superior vena
cava, 8 inferior vena cava. The chambers task keeps 1-4 as 1-4; the vessels task maps 5-8 to 1-4.
The other structures become background. Files such as pat<N>_orig_seg_endpoints.nii.gz (optional
vessel extents) are not used.

The older HVSMR 2016 challenge release labels only myocardium and blood pool, so it cannot give the
chamber or vessel tasks. `convert_hvsmr2016` converts it as a two-class task. Assumed layout, searched
in SOURCE_DIR and its subfolders (.nii or .nii.gz)::

    training_axial_full_pat<N>.nii.gz, training_axial_full_pat<N>-label.nii.gz   (variant "full")
    training_axial_crop_pat<N>.nii.gz, training_axial_crop_pat<N>-label.nii.gz   (variant "crop")

NOTE: neither label convention comes from the release documentation. The HVSMR-2.0 values follow the
data paper's structure list and third-party code. HVSMR 2016 is assumed to use 1 = myocardium and
2 = blood pool, as third-party code does. Check a converted case before training.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .common import (ConversionError, LabelMap, ReleaseLayoutError, TaskMetadata, convert_pairs, is_image_file,
                     make_case_pairs, pair_by_name, require_folder, resolve_dataset_id, strip_image_ending)

RELEASE_2 = "HVSMR-2.0"
RELEASE_2016 = "HVSMR 2016"
STRUCTURE_VALUES = {"LV": 1, "RV": 2, "LA": 3, "RA": 4, "aorta": 5, "pulmonary_artery": 6,
                    "superior_vena_cava": 7, "inferior_vena_cava": 8}
CHAMBERS = ("LV", "RV", "LA", "RA")
VESSELS = ("aorta", "pulmonary_artery", "superior_vena_cava", "inferior_vena_cava")
DEFAULT_DATASET_IDS = {"chambers": 507, "vessels": 508, "hvsmr2016": 512}

_REFERENCE_2 = ("Pace et al., HVSMR-2.0: A 3D cardiovascular MR dataset for whole-heart segmentation in congenital "
                "heart disease, Scientific Data 11 (2024), https://doi.org/10.1038/s41597-024-03469-9")
_REFERENCE_2016 = ("Pace et al., Interactive whole-heart segmentation in congenital heart disease, MICCAI 2015; "
                   "HVSMR 2016 challenge (MICCAI workshop on Whole-Heart and Great Vessel Segmentation from 3D "
                   "Cardiovascular MRI in Congenital Heart Disease)")


def task_metadata(structures: str) -> TaskMetadata:
    names = _structure_names(structures)
    return TaskMetadata(
        name="HVSMRChambers" if structures == "chambers" else "HVSMRVessels",
        channel_names={"0": "MRI"},
        labels={"background": 0, **{name: index for index, name in enumerate(names, start=1)}},
        description=f"HVSMR-2.0 cardiovascular MRI in congenital heart disease, {structures}: "
                    + ", ".join(f"{name} (HVSMR-2.0 value {STRUCTURE_VALUES[name]}) -> {index}"
                                for index, name in enumerate(names, start=1))
                    + "; other structures are background.",
        reference=_REFERENCE_2,
        licence="check the source",
        release="HVSMR-2.0 (60 scans)",
    )


METADATA_2016 = TaskMetadata(
    name="HVSMR2016",
    channel_names={"0": "MRI"},
    labels={"background": 0, "myocardium": 1, "blood_pool": 2},
    description="HVSMR 2016 challenge training scans, myocardium (1) and blood pool (2); the label convention is "
                "assumed, so check the source.",
    reference=_REFERENCE_2016,
    licence="check the source",
    release="HVSMR 2016 training data (10 scans)",
)


def convert_hvsmr(source_dir: str | os.PathLike, out_raw: str | os.PathLike, structures: str,
                  dataset_id: int | None = None, *, variant: str = "orig", overwrite: bool = False) -> Path:
    """Convert HVSMR-2.0 into the chambers or vessels task (`structures`), from the orig or cropped scans."""
    names = _structure_names(structures)
    if variant not in ("orig", "cropped"):
        raise ValueError(f"Unknown HVSMR-2.0 variant {variant!r}; expected 'orig' or 'cropped'.")
    source = require_folder(Path(source_dir), "the extracted HVSMR-2.0 folder", RELEASE_2)
    images = _find(source, re.compile(rf"^(pat\d+)_{variant}$"))
    labels = _find(source, re.compile(rf"^(pat\d+)_{variant}_seg$"))
    _require_any(images, source, f"pat<N>_{variant}.nii.gz", RELEASE_2)

    mapping = {0: 0, **{value: 0 for value in STRUCTURE_VALUES.values()}}
    mapping.update({STRUCTURE_VALUES[name]: index for index, name in enumerate(names, start=1)})
    triples = pair_by_name(images, labels, RELEASE_2)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_IDS[structures])
    return convert_pairs(make_case_pairs(triples), out_raw, dataset_id, task_metadata(structures), LabelMap(mapping),
                         overwrite=overwrite)


def convert_hvsmr2016(source_dir: str | os.PathLike, out_raw: str | os.PathLike, dataset_id: int | None = None,
                      *, variant: str = "full", overwrite: bool = False) -> Path:
    """Convert the HVSMR 2016 training scans (axial, full or crop) into a myocardium/blood pool task."""
    if variant not in ("full", "crop"):
        raise ValueError(f"Unknown HVSMR 2016 variant {variant!r}; expected 'full' or 'crop'.")
    source = require_folder(Path(source_dir), "the extracted HVSMR 2016 folder", RELEASE_2016)
    images = _find(source, re.compile(rf"^training_axial_{variant}_(pat\d+)$"))
    labels = _find(source, re.compile(rf"^training_axial_{variant}_(pat\d+)-label$"))
    _require_any(images, source, f"training_axial_{variant}_pat<N>.nii(.gz)", RELEASE_2016)
    triples = pair_by_name(images, labels, RELEASE_2016)
    dataset_id = resolve_dataset_id(dataset_id, DEFAULT_DATASET_IDS["hvsmr2016"])
    return convert_pairs(make_case_pairs(triples, prefix="hvsmr2016_"), out_raw, dataset_id, METADATA_2016,
                         LabelMap.identity([0, 1, 2]), overwrite=overwrite)


def _structure_names(structures: str) -> tuple[str, ...]:
    if structures == "chambers":
        return CHAMBERS
    if structures == "vessels":
        return VESSELS
    raise ValueError(f"Unknown HVSMR structure group {structures!r}; expected 'chambers' or 'vessels'.")


def _find(source: Path, pattern: re.Pattern) -> dict[str, Path]:
    """Return {case: path} for image files below `source` whose name without ending matches `pattern`."""
    found: dict[str, Path] = {}
    for path in sorted(source.rglob("*")):
        if not is_image_file(path):
            continue
        match = pattern.match(strip_image_ending(path.name))
        if match is None:
            continue
        case = match.group(1)
        if case in found:
            raise ConversionError(f"Two files for case {case} in {source}: {found[case]} and {path}. Keep one.")
        found[case] = path
    return found


def _require_any(images: dict[str, Path], source: Path, expected: str, release: str) -> None:
    if not images:
        raise ReleaseLayoutError(f"No {expected} files found in {source} or its subfolders; expected the {release} "
                                 f"scans there. Check SOURCE_DIR and the variant.")
