"""Linear probing: how well a logistic regression on frozen encoder embeddings predicts image labels.

Labels come from a CSV with columns `file`, `label` and, optionally, `slice`. At volume level each
file is one sample (its volume embedding). At slice level each listed slice is one sample, and a row
without a slice index applies to every slice of its file. Folds then keep all slices of a file
together, so that no volume is in both the training and the test part of a fold. Out-of-fold
predictions of stratified k-fold cross-validation give accuracy, balanced accuracy, one-vs-rest
ROC AUC and a confusion matrix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..embed import NIFTI_SUFFIXES
from ..validation import Problem, ValidationError
from .io import cached_slice_embeddings, save_figure_atomically, write_json_atomically, write_text_atomically

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("file", "label")
LEVELS = ("slice", "volume")


@dataclass(frozen=True)
class ProbeResult:
    """Metrics of a probe run and the files it wrote."""

    report: dict
    report_json: Path
    report_markdown: Path
    confusion_png: Path
    predictions_csv: Path


def read_label_table(csv_path: str | os.PathLike, level: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read and check the label CSV; return one row per sample and the level ("slice" or "volume").

    Relative paths in `file` are relative to the CSV's folder. `level=None` picks "slice" when the CSV
    has a `slice` column with values, else "volume". Every problem found is listed in one
    ValidationError. The returned table has columns `file` (absolute path), `slice` (-1 at volume
    level) and `label` (string).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Label CSV not found: {csv_path}. Pass a CSV with columns file, label and optionally slice.")
    if level is not None and level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; choose one of {LEVELS}.")

    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValidationError(
            [Problem(str(csv_path), f"columns {list(table.columns)}", f"columns {', '.join(REQUIRED_COLUMNS)} (and optionally slice)",
                     f"Add the missing column(s) {', '.join(missing)} to the header line.")],
            "Invalid label CSV",
        )
    if table.empty:
        raise ValueError(f"Label CSV {csv_path} has a header but no rows. Add one row per labelled file or slice.")

    has_slices = "slice" in table.columns and (table["slice"].str.strip() != "").any()
    if level is None:
        level = "slice" if has_slices else "volume"

    problems: list[Problem] = []
    rows = []
    headers: dict[Path, int] = {}
    for index, row in table.iterrows():
        line = f"{csv_path}, line {index + 2}"  # line 1 is the header
        label = row["label"].strip()
        if not label:
            problems.append(Problem(line, "an empty label", "a class name or number", "Fill in the label or drop the row."))
        file = Path(row["file"].strip())
        if not file.is_absolute():
            file = csv_path.parent / file
        if not row["file"].strip() or not file.is_file():
            problems.append(Problem(line, f"file {str(file)!r} (not found)", "an existing NIfTI file",
                                    "Fix the path. Relative paths are relative to the CSV's folder."))
            continue
        if not file.name.endswith(NIFTI_SUFFIXES):
            problems.append(Problem(line, f"file {file.name!r}", "a NIfTI file (.nii.gz or .nii)", "Convert the image to NIfTI."))
            continue
        if file not in headers:
            try:
                headers[file] = _slice_count(file)
            except RuntimeError as error:
                problems.append(Problem(line, f"file {str(file)!r}, which SimpleITK cannot read ({str(error).strip().splitlines()[-1]})",
                                        "a readable NIfTI file", "Replace the file with a valid image."))
                continue

        slice_text = row["slice"].strip() if "slice" in table.columns else ""
        if level == "volume":
            if slice_text:
                problems.append(Problem(line, f"slice {slice_text}", "no slice index at volume level",
                                        "Use --level slice, or clear the slice column."))
            rows.append((file, -1, label))
            continue
        if not slice_text:
            rows.extend((file, number, label) for number in range(headers[file]))
            continue
        try:
            number = int(slice_text)
        except ValueError:
            problems.append(Problem(line, f"slice {slice_text!r}", "an integer slice index", "Write the index as a whole number."))
            continue
        if not 0 <= number < headers[file]:
            problems.append(Problem(line, f"slice {number}", f"an index from 0 to {headers[file] - 1} ({file.name} has {headers[file]} slices)",
                                    "Slices are counted from 0 along numpy axis 0 of the SimpleITK array."))
            continue
        rows.append((file, number, label))

    samples = pd.DataFrame(rows, columns=["file", "slice", "label"])
    duplicated = samples[samples.duplicated(["file", "slice"], keep="first")]
    for file, number in zip(duplicated["file"], duplicated["slice"]):
        where = f"{file}" if number < 0 else f"{file}, slice {number}"
        problems.append(Problem(where, "more than one row", "one row per sample", "Drop the repeated rows."))
    if problems:
        raise ValidationError(problems, "Invalid label CSV")
    return samples, level


def _slice_count(path: Path) -> int:
    """Return the length of numpy axis 0 of the image array, from the header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    return 1 if len(size) == 2 else int(size[-1])


def check_class_sizes(labels: np.ndarray, groups: np.ndarray, folds: int, level: str) -> None:
    """Raise ValidationError unless there are two classes or more and each has at least `folds` members.

    At slice level a member is a file, because folds keep the slices of a file together.
    """
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 for cross-validation, got {folds}.")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"Only one class ({classes[0]!r}) in the label CSV; a classifier needs two classes or more.")

    problems = []
    for name in classes:
        members = len(np.unique(groups[labels == name]))
        if members < folds:
            unit = "files" if level == "slice" else "samples"
            problems.append(Problem(f"class {name!r}", f"{members} {unit}", f"at least {folds} (the number of folds)",
                                    f"Add {unit} of this class, lower --folds, or drop the class."))
    if problems:
        raise ValidationError(problems, "Too few members for stratified cross-validation")


def cross_validated_probabilities(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray | None, num_classes: int, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return out-of-fold class probabilities (N x K) and each sample's fold (N).

    `targets` are class indices 0..K-1. With `groups`, samples of one group stay in one fold.
    """
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(features, targets)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(features, targets, groups)

    probabilities = np.zeros((len(targets), num_classes))
    fold_of_sample = np.full(len(targets), -1)
    for fold, (train, test) in enumerate(splits):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        model.fit(features[train], targets[train])
        # A class absent from this fold's training part gets probability 0.
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
        fold_of_sample[test] = fold
        missing = sorted(set(range(num_classes)) - set(model.classes_.tolist()))
        if missing:
            logger.warning("Fold %d has no training samples of class indices %s.", fold, missing)
    return probabilities, fold_of_sample


def classification_metrics(targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Compute accuracy, balanced accuracy, one-vs-rest ROC AUC and the confusion matrix.

    `targets` are class indices into `classes`; predictions are the argmax of `probabilities` (N x K).
    Confusion matrix rows are true classes and columns predicted classes, both in `classes` order.
    """
    predictions = probabilities.argmax(axis=1)
    indices = list(range(len(classes)))
    if len(classes) == 2:
        auc = roc_auc_score(targets, probabilities[:, 1])
        auc_per_class = {classes[0]: auc, classes[1]: auc}
    else:
        auc = roc_auc_score(targets, probabilities, multi_class="ovr", labels=indices)
        auc_per_class = {name: roc_auc_score(targets == index, probabilities[:, index]) for index, name in enumerate(classes)}
    counts = np.bincount(targets, minlength=len(classes))
    return {
        "accuracy": float(accuracy_score(targets, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predictions)),
        "auc_ovr": float(auc),
        "auc_per_class": {name: float(value) for name, value in auc_per_class.items()},
        "chance_accuracy": float(counts.max() / counts.sum()),
        "confusion_matrix": confusion_matrix(targets, predictions, labels=indices).tolist(),
    }


def run_probe(
    csv_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    img_size: int | None = None,
    level: str | None = None,
    folds: int = 5,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    seed: int = 0,
) -> ProbeResult:
    """Cross-validate a logistic regression on frozen embeddings and write its report to `out_dir`.

    Embeddings are cached in `out_dir/embeddings` and reused when the encoder is the same. Writes
    `probe_report.json`, `probe_report.md`, `confusion_matrix.png` and `predictions.csv` (out-of-fold
    predictions with each class's probability). Without a checkpoint the encoder of `preset` has random
    weights from `seed`, a baseline to compare checkpoints against.
    """
    out_dir = Path(out_dir)
    samples, level = read_label_table(csv_path, level)
    files = list(dict.fromkeys(samples["file"]))
    file_index = {file: number for number, file in enumerate(files)}
    groups = samples["file"].map(file_index).to_numpy()
    labels = samples["label"].to_numpy()
    check_class_sizes(labels, groups if level == "slice" else np.arange(len(samples)), folds, level)

    if checkpoint is None:
        logger.warning("No checkpoint: probing the randomly initialised '%s' encoder (seed %d), a baseline only.", preset, seed)
    embeddings, used_size = cached_slice_embeddings(
        files, out_dir / "embeddings", checkpoint, preset, img_size, device, batch_size, seed
    )
    if level == "volume":
        features = np.stack([embeddings[index].mean(axis=0) for index in groups])  # N x C
    else:
        features = np.stack([embeddings[index][number] for index, number in zip(groups, samples["slice"])])  # N x C

    classes = sorted(np.unique(labels).tolist(), key=_natural_key)
    targets = np.array([classes.index(label) for label in labels])
    probabilities, fold_of_sample = cross_validated_probabilities(
        features, targets, groups if level == "slice" else None, len(classes), folds, seed
    )
    metrics = classification_metrics(targets, probabilities, classes)

    report = {
        "csv": str(Path(csv_path).resolve()),
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "preset": None if checkpoint is not None else preset,
        "img_size": used_size,
        "level": level,
        "folds": folds,
        "seed": seed,
        "classifier": "StandardScaler + LogisticRegression (scikit-learn defaults, max_iter=5000)",
        "samples": int(len(samples)),
        "files": len(files),
        "feature_dim": int(features.shape[1]),
        "classes": classes,
        "class_counts": {name: int((labels == name).sum()) for name in classes},
        **metrics,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = samples.assign(
        file=samples["file"].astype(str), predicted=[classes[index] for index in probabilities.argmax(axis=1)], fold=fold_of_sample
    )
    for index, name in enumerate(classes):
        predictions[f"probability_{name}"] = probabilities[:, index]

    result = ProbeResult(
        report=report,
        report_json=write_json_atomically(out_dir / "probe_report.json", report),
        report_markdown=write_text_atomically(out_dir / "probe_report.md", format_probe_markdown(report)),
        confusion_png=save_figure_atomically(_confusion_figure(metrics["confusion_matrix"], classes), out_dir / "confusion_matrix.png"),
        predictions_csv=write_text_atomically(out_dir / "predictions.csv", predictions.to_csv(index=False)),
    )
    logger.info("Probe: accuracy %.3f, balanced accuracy %.3f, AUC %.3f on %d samples.",
                report["accuracy"], report["balanced_accuracy"], report["auc_ovr"], report["samples"])
    return result


def format_probe_markdown(report: dict) -> str:
    """Format the metrics and the confusion matrix as Markdown tables."""
    encoder = report["checkpoint"] or f"random '{report['preset']}' encoder (no checkpoint)"
    lines = [
        "# Linear probe",
        "",
        f"Encoder: {encoder}. Level: {report['level']}, {report['samples']} samples from {report['files']} files, "
        f"{report['folds']}-fold stratified cross-validation, out-of-fold predictions.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {report['accuracy']:.3f} |",
        f"| balanced accuracy | {report['balanced_accuracy']:.3f} |",
        f"| ROC AUC (one-vs-rest) | {report['auc_ovr']:.3f} |",
        f"| majority-class accuracy | {report['chance_accuracy']:.3f} |",
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "| true \\ predicted | " + " | ".join(report["classes"]) + " |",
        "| --- |" + " --- |" * len(report["classes"]),
    ]
    for name, row in zip(report["classes"], report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(count) for count in row) + " |")
    return "\n".join(lines) + "\n"


def _confusion_figure(matrix: list[list[int]], classes: list[str]):
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    size = 1.2 + 0.6 * len(classes)
    figure = Figure(figsize=(size + 0.8, size))
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Linear probe, out-of-fold")
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return figure


def _natural_key(label: str) -> tuple:
    # Numeric labels sort as numbers (2 before 10); names sort alphabetically after them.
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)
