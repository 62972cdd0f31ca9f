"""Input validation for every command and trainer of mricore_nnunet.

Each check collects all problems it finds and raises one ValidationError that lists them, each with
the file, the value found, the value expected and the fix. The checks only read input files;
replace_nonfinite and split_4d_channels write corrected copies and never overwrite their source.
"""

from .checks import DatasetSummary, check_fold_count, check_image_files, check_raw_dataset
from .dataset_json import load_dataset_json
from .fewshot_checks import (check_fewshot_request, check_prediction_pairs, check_slice_counts,
                             check_volume_sizes)
from .files import find_cases
from .images import replace_nonfinite, split_4d_channels
from .problems import Problem, ValidationError

__all__ = [
    "DatasetSummary",
    "Problem",
    "ValidationError",
    "check_fewshot_request",
    "check_fold_count",
    "check_image_files",
    "check_prediction_pairs",
    "check_raw_dataset",
    "check_slice_counts",
    "check_volume_sizes",
    "find_cases",
    "load_dataset_json",
    "replace_nonfinite",
    "split_4d_channels",
]
