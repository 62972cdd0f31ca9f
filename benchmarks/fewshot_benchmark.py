"""Data-restricted segmentation: nnU-Net's CNN against the MRI-CORE trainers at equal CPU time.

    python benchmarks/fewshot_benchmark.py --checkpoint PRETRAINED.pth [--budget 60] [--seeds 0 1]
        [--dataset RAW_DATASET_FOLDER]

A setting is K fully labelled volumes, or the protocol of the MRI-CORE paper (arXiv 2506.12186):
5 volumes with 1 labelled slice each. For each setting and seed, `mricore_nnunet fewshot` derives a
dataset from the source dataset (default: the bundled hippocampus data). Every trainer then trains
fold 0 for the same CPU-time budget (benchmarks/trainers/budget_trainers.py) and predicts the same
held-out test volumes, and nnU-Net's evaluation gives the foreground Dice.

Results: benchmarks/results/fewshot_<dataset name>[_<tag>].json and .md, and
docs/images/fewshot_<dataset name>[_<tag>].png. The JSON is rewritten after every finished run. A
later call with the same checkpoint, budget and split sizes keeps the runs already in it and only
runs the trainers that are missing for each (setting, seed), so an interrupted benchmark loses at
most one draw's runs.
A call with other settings stops instead of replacing them: give it a --tag.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
BUNDLED = REPOSITORY / "mricore_nnunet" / "demo_data" / "Dataset004_Hippocampus"
RESULTS = REPOSITORY / "benchmarks" / "results"
# Settings that must match for earlier results to be kept.
COMPARABLE = ("checkpoint", "budget", "input_size", "validation_volumes", "test_cases", "dataset")

# name -> (trainer, plans)
TRAINERS = {
    "nnU-Net 2D CNN": ("nnUNetTrainer_budget", "nnUNetPlans"),
    "MRICoreTrainer (pretrained)": ("MRICoreTrainer_budget", "MRICorePlans"),
    "MRICoreTrainer_frozen": ("MRICoreTrainer_frozen_budget", "MRICorePlans"),
    "MRICoreTrainer_adapter": ("MRICoreTrainer_adapter_budget", "MRICorePlans"),
    "MRICoreTrainer_scratch": ("MRICoreTrainer_scratch_budget", "MRICorePlans"),
}
# name -> (training volumes, labelled slices per volume or "all")
SETTINGS = {
    "K=1 volume": (1, "all"),
    "K=5 volumes": (5, "all"),
    "K=3 volumes": (3, "all"),
    "K=10 volumes": (10, "all"),
    "5 volumes x 1 slice": (5, "1"),
}


def console(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run(arguments: list[str], env: dict, log: Path) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(arguments)}\n")
        handle.flush()
        completed = subprocess.run(arguments, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed (exit {completed.returncode}); see {log}")


def foreground_dice(summary_file: Path) -> tuple[float, dict[str, float]]:
    """nnU-Net's foreground mean Dice, and each case's Dice averaged over the labels it has."""
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    per_case = {}
    for case in summary["metric_per_case"]:
        name = Path(case["reference_file"]).name[: -len(".nii.gz")]
        values = [metrics["Dice"] for metrics in case["metrics"].values()]
        per_case[name] = float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
    return float(summary["foreground_mean"]["Dice"]), per_case


def training_cost(results_folder: Path, dataset_id: int, trainer: str, plans: str) -> dict:
    """Read the epochs and CPU seconds that the budget trainer logged when it stopped."""
    fold = next(results_folder.glob(f"Dataset{dataset_id:03d}_*")) / f"{trainer}__{plans}__2d" / "fold_0"
    for log in sorted(fold.glob("training_log_*.txt"), reverse=True):
        found = re.search(r"stopped after (\d+) epochs and ([\d.]+) CPU-s", log.read_text(encoding="utf-8"))
        if found:
            return {"epochs": int(found.group(1)), "cpu_s": float(found.group(2))}
    return {}


def source_id(dataset: Path) -> int:
    return int(dataset.name.split("_")[0][len("Dataset"):])


def run_one(setting: str, seed: int, dataset_id: int, trainers: list[str], args, env: dict, work: Path) -> dict:
    volumes, slices = SETTINGS[setting]
    log = work / "logs" / f"{dataset_id}.log"
    log.parent.mkdir(exist_ok=True)
    run([console("mricore_nnunet"), "fewshot", "-d", str(source_id(args.dataset)), "--volumes", str(volumes),
         "--slices-per-volume", slices, "--validation-volumes", str(args.validation_volumes), "--seed", str(seed),
         "--output-id", str(dataset_id)], env, log)
    dataset_dir = next((work / "nnUNet_raw").glob(f"Dataset{dataset_id:03d}_*"))

    test_images = work / f"test_{dataset_id}"
    test_labels = work / f"testlabels_{dataset_id}"
    test_images.mkdir(exist_ok=True)
    test_labels.mkdir(exist_ok=True)
    for label in sorted((dataset_dir / "labelsTs").iterdir())[: args.test_cases]:
        case = label.name[: -len(".nii.gz")]
        shutil.copy(dataset_dir / "imagesTs" / f"{case}_0000.nii.gz", test_images)
        shutil.copy(label, test_labels)

    run([console("mricore_nnunet"), "plan", "-d", str(dataset_id), "--checkpoint", args.checkpoint,
         "--input-size", str(args.input_size)], env, log)
    # nnU-Net 2.8.1's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0.
    run([console("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "2d", "-np", "1"],
        dict(env, nnUNet_n_proc_DA="1"), log)

    results = {}
    for name in trainers:
        trainer, plans = TRAINERS[name]
        start = time.monotonic()
        run([console("nnUNetv2_train"), str(dataset_id), "2d", "0", "-tr", trainer, "-p", plans, "-device", "cpu"], env, log)
        predictions = work / f"pred_{dataset_id}_{trainer}"
        run([console("nnUNetv2_predict"), "-i", str(test_images), "-o", str(predictions), "-d", str(dataset_id),
             "-c", "2d", "-f", "0", "-tr", trainer, "-p", plans, "-device", "cpu", "--disable_tta",
             "-npp", "1", "-nps", "1"], env, log)
        run([console("nnUNetv2_evaluate_folder"), str(test_labels), str(predictions),
             "-djfile", str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json")], env, log)
        dice, per_case = foreground_dice(predictions / "summary.json")
        results[name] = {"dice": dice, "per_case_dice": per_case, "wall_s": time.monotonic() - start,
                         **training_cost(work / "nnUNet_results", dataset_id, trainer, plans)}
        print(f"{setting:22s} seed {seed}  {name:30s} Dice {results[name]['dice']:.3f}", flush=True)
    return results


def plain_settings(args) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def results_name(args) -> str:
    name = "fewshot_" + args.dataset.name.split("_", 1)[-1]
    return f"{name}_{args.tag}" if args.tag else name


def earlier_results(args) -> dict:
    """Runs from an earlier call that can be merged with this one, as {setting: {seed: results}}."""
    path = RESULTS / f"{results_name(args)}.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    settings = plain_settings(args)
    differing = [key for key in COMPARABLE if earlier["settings"].get(key) != settings[key]]
    if differing:
        raise SystemExit(f"{path} contains runs made with other {', '.join(differing)}. Give this benchmark another --tag, "
                         "or move that file away to start again.")
    # JSON keys are strings; seeds are integers here.
    return {setting: {int(seed): runs for seed, runs in by_seed.items()} for setting, by_seed in earlier["results"].items()}


def save_results(results: dict, args) -> None:
    RESULTS.mkdir(exist_ok=True)
    content = json.dumps({"settings": plain_settings(args), "results": results}, indent=2)
    path = RESULTS / f"{results_name(args)}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(content, encoding="utf-8")
    partial.replace(path)


def write_report(results: dict, args, minutes: float) -> None:
    settings = plain_settings(args)
    results = {setting: results[setting] for setting in SETTINGS if setting in results}

    names = [n for n in TRAINERS if any(n in r for by_seed in results.values() for r in by_seed.values())]
    lines = ["| setting | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    summary, spread = {}, {}
    for setting, by_seed in results.items():
        cells = []
        for name in names:
            values = [r[name]["dice"] for r in by_seed.values() if name in r]
            summary.setdefault(name, []).append(np.mean(values) if values else np.nan)
            spread.setdefault(name, []).append(np.std(values) if values else 0.0)
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f} ({len(values)})" if values else "-")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")

    # What each trainer did with its budget, over all runs.
    lines += ["", "| trainer | runs | epochs of 10 iterations (mean) | CPU seconds used (mean) |", "| --- | --- | --- | --- |"]
    for name in names:
        runs = [r[name] for by_seed in results.values() for r in by_seed.values() if name in r]
        epochs = [run["epochs"] for run in runs if "epochs" in run]
        seconds = [run["cpu_s"] for run in runs if "cpu_s" in run]
        lines.append(f"| {name} | {len(runs)} | {np.mean(epochs) if epochs else float('nan'):.1f} | "
                     f"{np.mean(seconds) if seconds else float('nan'):.1f} |")
    table = "\n".join(lines)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    positions = np.arange(len(results))
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        axis.bar(positions + index * width, summary[name], width, yerr=spread[name], capsize=2, label=name)
    axis.set_xticks(positions + width * (len(names) - 1) / 2, list(results))
    axis.set_ylabel("foreground Dice (test volumes)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    figure.tight_layout()
    images = REPOSITORY / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    figure.savefig(images / f"{results_name(args)}.png", dpi=120)

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}"
    (RESULTS / f"{results_name(args)}.md").write_text(
        f"Machine: {machine}. This call: {minutes:.0f} minutes.\n\nSettings: {json.dumps(settings)}\n\n{table}\n",
        encoding="utf-8",
    )
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="pretrained encoder checkpoint for the MRI-CORE trainers")
    parser.add_argument("--dataset", type=Path, default=BUNDLED,
                        help="nnU-Net raw dataset folder DatasetXXX_Name to draw from (default: the bundled hippocampus data)")
    parser.add_argument("--budget", type=float, default=60, help="CPU seconds of training per run (default 60)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="draws to repeat (default 0 1)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--trainers", nargs="+", choices=list(TRAINERS), help="subset of trainers (default all)")
    parser.add_argument("--input-size", type=int, default=64, help="MRI-CORE encoder input in pixels (default 64)")
    parser.add_argument("--validation-volumes", type=int, default=2, help="validation volumes per draw (default 2)")
    parser.add_argument("--test-cases", type=int, default=8, help="held-out volumes scored per draw (default 8)")
    parser.add_argument("--tag", default="", help="suffix of the results' file names, for runs with other settings")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mricore_fewshot_benchmark"))
    args = parser.parse_args()
    args.checkpoint = str(Path(args.checkpoint).resolve())
    args.dataset = args.dataset.resolve()
    if not (args.dataset / "dataset.json").is_file() or not args.dataset.name.startswith("Dataset"):
        parser.error(f"--dataset {args.dataset}: expected an nnU-Net raw dataset folder DatasetXXX_Name with a dataset.json")

    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "nnUNet_raw").mkdir(parents=True)
    shutil.copytree(args.dataset, work / "nnUNet_raw" / args.dataset.name, ignore=shutil.ignore_patterns("imagesTs", "labelsTs"))
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(work / "nnUNet_raw"), "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
        "nnUNet_extTrainer": os.pathsep.join([str(REPOSITORY / "benchmarks" / "trainers"), str(REPOSITORY / "trainers")]),
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "trainers"), env.get("PYTHONPATH", "")]),
        "MRICORE_CPU_BUDGET_S": str(args.budget), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0",
    })
    env.pop("MRICORE_CHECKPOINT", None)

    start = time.monotonic()
    results = earlier_results(args)
    dataset_id = 600
    for setting in args.settings:
        for seed in args.seeds:
            dataset_id += 1
            done = results.get(setting, {}).get(seed, {})
            missing = [name for name in TRAINERS if name not in done and (not args.trainers or name in args.trainers)]
            if len(missing) < len(args.trainers or TRAINERS):
                print(f"{setting:22s} seed {seed}  kept {', '.join(sorted(done))} from "
                      f"{RESULTS / results_name(args)}.json", flush=True)
            if not missing:
                continue
            runs = run_one(setting, seed, dataset_id, missing, args, env, work)
            results.setdefault(setting, {})[seed] = {**done, **runs}
            save_results(results, args)
    write_report(results, args, (time.monotonic() - start) / 60)


if __name__ == "__main__":
    main()
