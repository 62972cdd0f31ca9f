"""Prediction of new scans with a trained model, built on nnU-Net's nnUNetPredictor.

Each case goes through nnU-Net's own preprocessing, sliding-window prediction (with test-time mirroring
unless disabled) and export, as in `nnUNetv2_predict`, so the segmentations match it voxel for voxel.
This module checks every input before the model loads and predicts one case at a time with a progress
bar. Each output is written under a temporary name and renamed into place, and cases whose outputs
exist are skipped, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from mricore_nnunet import nnunet_env, validation
from mricore_nnunet.atomic import atomic_path
from mricore_nnunet.planning import PLANS_NAME
from mricore_nnunet.validation.dataset_json import channel_count
from mricore_nnunet.validation.images import inspect_image

# Sliding-window tiles per network call; see mricore_nnunet/tile_batching.py and docs/performance.md.
DEFAULT_TILE_BATCH_SIZE = 8

logger = logging.getLogger(__name__)

DEFAULT_TRAINER = "MRICoreTrainer"
DEFAULT_PLANS = PLANS_NAME
DEFAULT_CONFIGURATION = "2d"
CHECKPOINT_NAME = "checkpoint_final.pth"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

# Case outputs are first written as OUT/.partial-<case><ending> and then renamed. The leading dot hides
# them from casual listings, and each run first removes the ones that a killed run left behind. They do
# not use atomic.atomic_path because nnU-Net's export writes up to three files from one name prefix.
TEMPORARY_PREFIX = ".partial-"
# nnU-Net writes probabilities as <case>.npz and the preprocessing properties as <case>.pkl.
PROBABILITY_SUFFIXES = (".npz", ".pkl")


@dataclass
class PredictionResult:
    """Outcome of a prediction run: the cases predicted and the cases skipped because their outputs existed."""

    output_folder: Path
    model_folder: Path
    folds: list[int | str]
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """Return the torch device for `name`: auto picks cuda, else mps, else cpu.

    Raises RuntimeError when cuda or mps is requested but PyTorch cannot use it.
    """
    if name not in DEVICE_CHOICES:
        raise ValueError(f"Invalid device {name!r}; expected one of {', '.join(DEVICE_CHOICES)}.")
    cuda_available = torch.cuda.is_available()
    mps_available = torch.backends.mps.is_available()
    if name == "auto":
        if cuda_available:
            return torch.device("cuda")
        return torch.device("mps") if mps_available else torch.device("cpu")
    if name == "cuda" and not cuda_available:
        raise RuntimeError(
            "Device cuda was requested, but PyTorch finds no usable CUDA GPU (torch.cuda.is_available() is False). "
            "Use --device cpu or --device auto, or install a CUDA build of torch (see 'GPU machines' in README.md).")
    if name == "mps" and not mps_available:
        raise RuntimeError(
            "Device mps was requested, but PyTorch finds no Apple GPU (torch.backends.mps.is_available() is False). "
            "Use --device cpu or --device auto.")
    return torch.device(name)


def find_model_folder(dataset: str | int, trainer: str = DEFAULT_TRAINER, plans: str = DEFAULT_PLANS,
                      configuration: str = DEFAULT_CONFIGURATION) -> Path:
    """Return $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION, the folder nnUNetv2_predict uses.

    `dataset` is a dataset id (4) or name (Dataset004_Hippocampus). Only nnUNet_results is needed.
    """
    results = os.environ.get("nnUNet_results")
    if not results:
        raise RuntimeError(
            "The environment variable nnUNet_results is not set, so the trained model of dataset "
            f"{dataset} cannot be found. Set it ('mricore_nnunet env' prints the line), or pass the model "
            "folder TRAINER__PLANS__CONFIGURATION with -m.")
    results_folder = Path(results)
    dataset_name = _dataset_folder_name(results_folder, dataset)
    folder = results_folder / dataset_name / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        trained = sorted(p.name for p in (results_folder / dataset_name).iterdir() if p.is_dir() and "__" in p.name)
        raise FileNotFoundError(
            f"No trained model {folder.name} in {folder.parent}; it contains {', '.join(trained) or 'no model'}. "
            f"Check -tr, -p and -c, or train the model with "
            f"'nnUNetv2_train {dataset_name} {configuration} FOLD -tr {trainer} -p {plans}'.")
    return folder


def select_folds(model_folder: str | os.PathLike, folds: Sequence[int | str] | None = None) -> list[int | str]:
    """Return the folds to predict with, each with a fold_N/checkpoint_final.pth.

    Without `folds`, every fold_N folder (N a number, as nnU-Net's own default) that contains a final
    checkpoint is used, and a warning names the folders without one.
    """
    model_folder = Path(model_folder)
    if folds is None:
        numbered = sorted(int(p.name[len("fold_"):]) for p in model_folder.glob("fold_*")
                          if p.is_dir() and p.name[len("fold_"):].isdigit())
        selected = [fold for fold in numbered if (model_folder / f"fold_{fold}" / CHECKPOINT_NAME).is_file()]
        unfinished = [fold for fold in numbered if fold not in selected]
        if unfinished:
            logger.warning("Not using fold(s) %s of %s: they have no %s (training not finished?)",
                           ", ".join(map(str, unfinished)), model_folder, CHECKPOINT_NAME)
        if not selected:
            raise FileNotFoundError(
                f"{model_folder} contains no fold_N folder with {CHECKPOINT_NAME}. Finish training a fold with "
                f"nnUNetv2_train, or name the folds to use with -f (for example -f all).")
        return selected

    selected = []
    for fold in folds:
        if str(fold) == "all":
            selected.append("all")
        elif str(fold).isdigit():
            selected.append(int(fold))
        else:
            raise ValueError(f"Invalid fold {fold!r}; expected a fold number such as 0 or the word 'all'.")
    missing = [str(model_folder / f"fold_{fold}" / CHECKPOINT_NAME) for fold in selected
               if not (model_folder / f"fold_{fold}" / CHECKPOINT_NAME).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Missing checkpoint(s) of the requested folds: {', '.join(missing)}. Train those folds with "
            f"nnUNetv2_train, or leave out -f to use every fold that has a {CHECKPOINT_NAME}.")
    return selected


def predict(input_path: str | os.PathLike, output_folder: str | os.PathLike, model_folder: str | os.PathLike,
            folds: Sequence[int | str] | None = None, device: torch.device | str = "cpu",
            use_mirroring: bool = True, save_probabilities: bool = False, overwrite: bool = False,
            replace_nonfinite: bool = False, progress: bool = True,
            tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE) -> PredictionResult:
    """Predict every case of `input_path` (a folder or one image file) into `output_folder`.

    Checks the model folder, the folds and every input file before the model loads, and raises one
    ValidationError that lists every bad input. Cases whose outputs exist are skipped unless
    `overwrite`. With `replace_nonfinite`, NaN and Inf voxels are replaced in temporary copies of the
    affected files and those copies are predicted. Input files are only read. `tile_batch_size`
    sliding-window tiles go through the network per call (1 is nnUNetv2_predict's behaviour).
    """
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}.")
    model_folder = Path(model_folder)
    output_folder = Path(output_folder)
    device = torch.device(device) if isinstance(device, str) else device
    dataset_json = _read_model_dataset_json(model_folder)
    selected_folds = select_folds(model_folder, folds)
    cases = _check_inputs(Path(input_path), output_folder, dataset_json, replace_nonfinite)

    file_ending = dataset_json["file_ending"]
    output_folder.mkdir(parents=True, exist_ok=True)
    _remove_temporary_files(output_folder)
    result = PredictionResult(output_folder=output_folder, model_folder=model_folder, folds=selected_folds)
    if not overwrite:
        result.skipped = _finished_cases(cases, output_folder, file_ending, save_probabilities)
    if result.skipped:
        logger.info("Skipping %d case(s) whose outputs exist in %s (overwrite=True predicts them again)",
                    len(result.skipped), output_folder)
    to_predict = {case: files for case, files in cases.items() if case not in result.skipped}
    if not to_predict:
        return result

    predictor = load_predictor(model_folder, selected_folds, device, use_mirroring, tile_batch_size)
    # nnU-Net's evaluation and ensembling read these two files from a prediction folder.
    for name in ("dataset.json", "plans.json"):
        with atomic_path(output_folder / name) as temporary:
            shutil.copyfile(model_folder / name, temporary)

    # Repaired copies of inputs with NaN or Inf voxels go to a scratch folder that is removed afterwards.
    scratch_folder = (tempfile.TemporaryDirectory(prefix="mricore_nonfinite_") if replace_nonfinite
                      else contextlib.nullcontext())
    with scratch_folder as scratch:
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        with tqdm(total=len(to_predict), desc="Predicting", unit="case", disable=not progress) as bar:
            for case, files in to_predict.items():
                bar.set_postfix_str(case)
                if replace_nonfinite:
                    files = _replace_nonfinite_voxels(files, Path(scratch))
                _predict_case(predictor, preprocessor, files, output_folder, case, save_probabilities)
                result.predicted.append(case)
                bar.update()
    return result


def load_predictor(model_folder: str | os.PathLike, folds: Sequence[int | str], device: torch.device,
                   use_mirroring: bool = True, tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE):
    """Load a trained model for prediction, with nnUNetv2_predict's default settings.

    The predictor is a TileBatchingPredictor, nnU-Net's predictor with `tile_batch_size` tiles per network call.
    """
    from mricore_nnunet.tile_batching import TileBatchingPredictor

    nnunet_env.configure_trainer_search_path()
    if device.type == "cpu":
        # nnUNetv2_predict does the same on the CPU; nnU-Net then caps the threads of each step itself.
        torch.set_num_threads(os.cpu_count() or 1)
    # nnU-Net prints where it searched for the trainer class; that is detail for --verbose, not for users.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            predictor = TileBatchingPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False,
                tile_batch_size=tile_batch_size)
            predictor.initialize_from_trained_model_folder(str(model_folder), list(folds), CHECKPOINT_NAME)
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                logger.debug("nnU-Net: %s", line)
    if predictor.configuration_manager.previous_stage_name is not None:
        raise ValueError(
            f"{model_folder} is a cascade stage, which needs the segmentations of the previous stage. "
            f"Predict it with nnUNetv2_predict -prev_stage_predictions.")
    logger.info("Loaded %s (folds %s) on %s", model_folder, ", ".join(map(str, folds)), device)
    return predictor


def _dataset_folder_name(results_folder: Path, dataset: str | int) -> str:
    text = str(dataset)
    if text.startswith("Dataset"):
        if not (results_folder / text).is_dir():
            raise FileNotFoundError(f"Dataset {text} has no trained models in {results_folder} (nnUNet_results).")
        return text
    if not text.isdigit():
        raise ValueError(f"Invalid dataset {text!r}; expected a dataset id such as 4 or a name such as "
                         f"Dataset004_Hippocampus.")
    prefix = f"Dataset{int(text):03d}_"
    present = sorted(p.name for p in results_folder.iterdir() if p.is_dir()) if results_folder.is_dir() else []
    candidates = [name for name in present if name.startswith(prefix)]
    if not candidates:
        raise FileNotFoundError(
            f"No dataset with id {text} in {results_folder} (nnUNet_results); it contains "
            f"{', '.join(present) or 'nothing'}. Check -d, or install the model there with "
            f"nnUNetv2_install_pretrained_model_from_zip.")
    if len(candidates) > 1:
        raise RuntimeError(f"Dataset id {text} matches several folders in {results_folder}: {', '.join(candidates)}. "
                           f"Pass the dataset name with -d.")
    return candidates[0]


def _read_model_dataset_json(model_folder: Path) -> dict:
    if not model_folder.is_dir():
        raise FileNotFoundError(
            f"Model folder {model_folder} not found. Pass the TRAINER__PLANS__CONFIGURATION folder, for "
            f"example $nnUNet_results/Dataset004_Hippocampus/{DEFAULT_TRAINER}__{DEFAULT_PLANS}__2d.")
    missing = [name for name in ("dataset.json", "plans.json") if not (model_folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{model_folder} is not an nnU-Net model folder: {' and '.join(missing)} missing. Pass the "
            f"TRAINER__PLANS__CONFIGURATION folder, the one that contains the fold_N folders.")
    return validation.load_dataset_json(model_folder / "dataset.json")


def _check_inputs(input_path: Path, output_folder: Path, dataset_json: dict,
                  replace_nonfinite: bool) -> dict[str, list[str]]:
    """Validate every input file and return case id -> channel files."""
    input_folder = input_path if input_path.is_dir() else input_path.parent
    if output_folder.resolve() == input_folder.resolve():
        raise ValueError(
            f"The output folder {output_folder} is the input folder. Write the predictions to another folder: "
            f"segmentations named <case>{dataset_json['file_ending']} among the inputs would fail the input "
            f"check of the next run.")
    if output_folder.exists() and not output_folder.is_dir():
        raise ValueError(f"The output path {output_folder} is a file; expected a folder for the predictions.")
    cases = validation.check_image_files(input_path, channel_count(dataset_json), dataset_json["file_ending"],
                                         allow_nonfinite=replace_nonfinite)
    logger.info("Checked %d case(s) in %s: no problems", len(cases), input_path)
    return cases


def _output_files(output_folder: Path, case: str, file_ending: str, save_probabilities: bool) -> list[Path]:
    """Return the outputs of a case, the segmentation last, in the order they are moved into place."""
    suffixes = list(PROBABILITY_SUFFIXES) if save_probabilities else []
    return [output_folder / f"{case}{suffix}" for suffix in suffixes + [file_ending]]


def _finished_cases(cases: dict[str, list[str]], output_folder: Path, file_ending: str,
                    save_probabilities: bool) -> list[str]:
    """Return the cases whose requested outputs all exist in `output_folder`."""
    return [case for case in cases
            if all(path.is_file() for path in _output_files(output_folder, case, file_ending, save_probabilities))]


def _remove_temporary_files(output_folder: Path) -> None:
    # NOTE: this also removes the temporary files of a second run writing to the same folder at the same
    # time, so one output folder takes one run at a time.
    leftovers = [path for path in output_folder.iterdir() if path.name.startswith(TEMPORARY_PREFIX)]
    for path in leftovers:
        path.unlink()
    if leftovers:
        logger.info("Removed %d unfinished file(s) of an interrupted run from %s", len(leftovers), output_folder)


def _replace_nonfinite_voxels(files: list[str], scratch: Path) -> list[str]:
    """Return the case's files, each file that contains NaN or Inf voxels replaced by a repaired copy."""
    repaired = []
    for file in files:
        info = inspect_image(file)
        if info.nan_count or info.inf_count:
            copy = scratch / Path(file).name
            # 0, as in training: SimpleITK 2.5 reads NaN and Inf in NIfTI files as 0 when nnU-Net preprocesses.
            validation.replace_nonfinite(file, copy, value=0.0)
            repaired.append(str(copy))
        else:
            repaired.append(file)
    return repaired


def _predict_case(predictor, preprocessor, files: list[str], output_folder: Path, case: str,
                  save_probabilities: bool) -> None:
    """Predict one case and move its outputs into place, the segmentation last, so it marks a finished case."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                                predictor.dataset_json)
    # The same conversions as nnUNetv2_predict's data iterator and export pool, for voxel-equal outputs.
    data = torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format)
    logits = predictor.predict_logits_from_preprocessed_data(data).cpu().detach().numpy()

    file_ending = predictor.dataset_json["file_ending"]
    targets = _output_files(output_folder, case, file_ending, save_probabilities)
    temporaries = [target.with_name(TEMPORARY_PREFIX + target.name) for target in targets]
    try:
        export_prediction_from_logits(logits, properties, predictor.configuration_manager, predictor.plans_manager,
                                      predictor.dataset_json, str(output_folder / f"{TEMPORARY_PREFIX}{case}"),
                                      save_probabilities)
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
    except BaseException:
        # Ctrl-C or a failed write: remove this case's temporary files now. A hard kill leaves them to
        # the next run, which removes them before it starts.
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise
