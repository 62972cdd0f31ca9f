"""Relate the distance to the pre-training data to how much pre-training helps few-shot segmentation.

    python benchmarks/similarity_report.py --checkpoint PRETRAINED.pth --pretraining-data FOLDER_OR_MANIFEST \
        --fewshot benchmarks/results/fewshot_Hippocampus.json benchmarks/results/fewshot_BrainTumorProgression.json

Reads the few-shot benchmark's results (benchmarks/fewshot_benchmark.py), whose runs record the
Dice of every test volume, and the encoder checkpoint those runs started from. The gain of
pre-training is the Dice of `MRICoreTrainer (pretrained)` minus that of `MRICoreTrainer_scratch`
on the same volume, in the same setting and seed.

1. Per dataset: the distances between the pre-training images and all images of the dataset
   (Fréchet, MMD and centroid cosine distance of slice embeddings, as `mricore_nnunet similarity`
   computes them) next to the mean Dice of both trainers and the gain.
2. Per test volume: the Fréchet and cosine distances between that volume's slices and the
   pre-training images, against the volume's gain averaged over the runs it was tested in, with
   Spearman's rank correlation over all volumes of all datasets.

Results: benchmarks/results/similarity_fewshot.json and .md, docs/images/similarity_fewshot.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from mricore_nnunet.analysis.io import cached_slice_embeddings
from mricore_nnunet.analysis.similarity import (centroid_cosine_distance, compare_image_sets, frechet_distance,
                                                read_image_set)

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "benchmarks" / "results"
PRETRAINED = "MRICoreTrainer (pretrained)"
SCRATCH = "MRICoreTrainer_scratch"
MIN_VOLUMES_FOR_CORRELATION = 5


def volume_gains(results: dict) -> dict[str, list[float]]:
    """Map each test volume to its Dice gains (pretrained minus scratch), one per run it was tested in."""
    gains: dict[str, list[float]] = {}
    for by_seed in results["results"].values():
        for runs in by_seed.values():
            pretrained = runs[PRETRAINED]["per_case_dice"]
            scratch = runs[SCRATCH]["per_case_dice"]
            for case, dice in pretrained.items():
                if not (np.isnan(dice) or np.isnan(scratch[case])):
                    gains.setdefault(case, []).append(dice - scratch[case])
    return gains


def mean_dice(results: dict, trainer: str) -> float:
    return float(np.mean([runs[trainer]["dice"] for by_seed in results["results"].values() for runs in by_seed.values()]))


def analyse_dataset(results_file: Path, args) -> tuple[dict, list[dict]]:
    results = json.loads(results_file.read_text(encoding="utf-8"))
    dataset = Path(results["settings"]["dataset"])
    name = dataset.name.split("_", 1)[-1]
    missing = [f"{setting} seed {seed}" for setting, by_seed in results["results"].items() for seed, runs in by_seed.items()
               if "per_case_dice" not in runs.get(PRETRAINED, {}) or "per_case_dice" not in runs.get(SCRATCH, {})]
    if missing:
        raise SystemExit(f"{results_file}: no per-volume Dice of {PRETRAINED} and {SCRATCH} for {', '.join(missing)}. "
                         "Run benchmarks/fewshot_benchmark.py again for these.")

    work = args.work_dir / name
    report = compare_image_sets(args.pretraining_data, dataset / "imagesTr", work, metrics=("frechet", "mmd", "cosine"),
                                checkpoint=args.checkpoint).report
    row = {
        "dataset": name, "volumes": report["b"]["volumes"], "slices": report["b"]["slices"], **report["distances"],
        "dice_pretrained": mean_dice(results, PRETRAINED), "dice_scratch": mean_dice(results, SCRATCH),
        "runs": sum(len(by_seed) for by_seed in results["results"].values()),
    }
    row["gain"] = row["dice_pretrained"] - row["dice_scratch"]

    # compare_image_sets cached the pre-training embeddings in work/embeddings/a.
    pretraining_files = read_image_set(args.pretraining_data)
    pretraining, _ = cached_slice_embeddings(pretraining_files, work / "embeddings" / "a", args.checkpoint, "tiny", None,
                                             "cpu", 16, 0)
    pretraining = np.concatenate(pretraining)
    gains = volume_gains(results)
    cases = sorted(gains)
    images = [dataset / "imagesTr" / f"{case}_0000.nii.gz" for case in cases]
    embeddings, _ = cached_slice_embeddings(images, work / "embeddings" / "test_volumes", args.checkpoint, "tiny", None,
                                            "cpu", 16, 0)
    volumes = []
    for case, volume in zip(cases, embeddings):
        volumes.append({
            "dataset": name, "case": case, "slices": int(len(volume)), "runs": len(gains[case]),
            "gain": float(np.mean(gains[case])), "frechet": frechet_distance(pretraining, volume),
            "cosine": centroid_cosine_distance(pretraining, volume),
        })
    return row, volumes


def rank_correlation(volumes: list[dict], metric: str) -> dict:
    rho, p_value = spearmanr([volume[metric] for volume in volumes], [volume["gain"] for volume in volumes])
    return {"rho": float(rho), "p": float(p_value), "volumes": len(volumes)}


def plot(volumes: list[dict], correlations: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, metric in zip(axes, ("frechet", "cosine")):
        for dataset in sorted({volume["dataset"] for volume in volumes}):
            chosen = [volume for volume in volumes if volume["dataset"] == dataset]
            axis.scatter([volume[metric] for volume in chosen], [volume["gain"] for volume in chosen], s=14, label=dataset)
        axis.axhline(0, color="grey", linewidth=0.8)
        rho, p_value = correlations[metric]["rho"], correlations[metric]["p"]
        axis.set_title(f"Spearman rho {rho:.2f} (p = {p_value:.2g}, n = {len(volumes)})", fontsize=9)
        axis.set_xlabel(f"{'Fréchet' if metric == 'frechet' else 'cosine'} distance to the pre-training slices")
        axis.set_ylabel("Dice gain of pre-training")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def write_report(rows: list[dict], volumes: list[dict], correlations: dict, args) -> str:
    lines = ["| dataset | volumes / slices | Fréchet | MMD² | cosine | runs | Dice pretrained | Dice scratch | gain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['volumes']} / {row['slices']} | {row['frechet']:.3g} | {row['mmd']:.3g} | "
                     f"{row['cosine']:.3g} | {row['runs']} | {row['dice_pretrained']:.3f} | {row['dice_scratch']:.3f} | "
                     f"{row['gain']:+.3f} |")
    lines += ["", "| per-volume distance | Spearman rho with the gain | p | volumes |", "| --- | --- | --- | --- |"]
    for metric, values in correlations.items():
        lines.append(f"| {metric} | {values['rho']:.3f} | {values['p']:.3g} | {values['volumes']} |")
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    settings = {"checkpoint": str(args.checkpoint), "pretraining_data": str(args.pretraining_data),
                "fewshot": [str(path) for path in args.fewshot]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "similarity_fewshot.json").write_text(
        json.dumps({"settings": settings, "datasets": rows, "volumes": volumes, "correlations": correlations}, indent=2),
        encoding="utf-8")
    (RESULTS / "similarity_fewshot.md").write_text(f"Machine: {machine}.\n\nSettings: {json.dumps(settings)}\n\n{table}\n",
                                                   encoding="utf-8")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the encoder checkpoint the few-shot runs started from")
    parser.add_argument("--pretraining-data", type=Path, required=True,
                        help="the checkpoint's pre-training images: a folder of NIfTI files or its data_manifest.json")
    parser.add_argument("--fewshot", type=Path, nargs="+", required=True, help="results JSON files of the few-shot benchmark")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mricore_similarity_report"), help="embedding caches")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows, volumes = [], []
    for results_file in args.fewshot:
        row, per_volume = analyse_dataset(results_file, args)
        rows.append(row)
        volumes.extend(per_volume)
    correlations = {metric: rank_correlation(volumes, metric) for metric in ("frechet", "cosine")}
    # Across datasets, a correlation can come from the datasets' differences alone, so each dataset gets its own.
    for dataset in sorted({volume["dataset"] for volume in volumes}):
        chosen = [volume for volume in volumes if volume["dataset"] == dataset]
        if len(chosen) >= MIN_VOLUMES_FOR_CORRELATION:
            for metric in ("frechet", "cosine"):
                correlations[f"{metric}, {dataset} only"] = rank_correlation(chosen, metric)
    plot(volumes, correlations, REPOSITORY / "docs" / "images" / "similarity_fewshot.png")
    print(write_report(rows, volumes, correlations, args))


if __name__ == "__main__":
    main()
