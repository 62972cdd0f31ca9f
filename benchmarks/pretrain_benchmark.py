"""Benchmark of `mricore_nnunet pretrain`: training throughput per preset and a k-NN probe of the features.

Not a test. Run from the repository root:

    python benchmarks/pretrain_benchmark.py --data /path/to/UnlabeledMRI/images --work-dir /tmp/pretrain_bench

1. Throughput: a few iterations of each preset on the data, reporting slices per second after
   the first iteration (which includes start-up).
2. Probe: the tiny preset is pre-trained briefly (or `--probe-checkpoint` names a finished
   run's teacher). Then the pre-trained teacher and a random initialisation of the same
   preset are compared on labels that pre-training never saw:
   - slice embeddings (mean-pooled tokens of the last block), scored by a k-nearest-neighbour
     classifier with leave-one-volume-out cross-validation: the slice position in its volume
     (thirds) and the body region (brain if the file name starts with "pgbm", else
     hippocampus);
   - the MRI sequence (FLAIR, T1 or T2 from the file name) of the brain slices, by a logistic
     regression that leaves out one study (all sequences of one exam) at a time, so the
     classifier cannot match a slice to the co-registered slices of the same exam;
   - with `--labelled DATASET`: patch tokens of the labelled slices of an nnU-Net raw dataset,
     by a logistic regression with 5-fold cross-validation grouped by case: does the 16 x 16
     pixel patch contain at least 25 % foreground? Scored by ROC AUC.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import SimpleITK as sitk
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mricore_nnunet.checkpoints import build_encoder_from_checkpoint
from mricore_nnunet.encoder import MRICoreEncoder
from mricore_nnunet.ssl import PretrainConfig, SliceIndex, pretrain

logger = logging.getLogger("pretrain_benchmark")

THROUGHPUT_RUNS = [
    # preset, iterations, batch size per process, global size, local size, local crops
    ("tiny", 6, 16, 224, 96, 8),
    ("small", 3, 4, 224, 96, 8),
    ("vit_b", 3, 2, 224, 96, 8),
]


def measure_throughput(data: list[str], work_dir: Path) -> list[dict]:
    rows = []
    for preset, iterations, batch_size, global_size, local_size, local_crops in THROUGHPUT_RUNS:
        out = work_dir / f"throughput_{preset}"
        shutil.rmtree(out, ignore_errors=True)
        config = PretrainConfig(
            data=data, out=str(out), preset=preset, iterations=iterations, batch_size=batch_size,
            global_size=global_size, local_size=local_size, num_local_crops=local_crops, save_every=10_000,
            log_every=1,
        )
        result = pretrain(config)
        seconds = [entry["seconds"] for entry in result.history[1:]]
        rows.append({
            "preset": preset, "batch": batch_size, "crops": f"2x{global_size} + {local_crops}x{local_size}",
            "iterations": iterations, "s_per_iteration": float(np.mean(seconds)),
            "slices_per_s": batch_size / float(np.mean(seconds)),
        })
    return rows


@torch.no_grad()
def slice_embeddings(encoder: MRICoreEncoder, index: SliceIndex, size: int) -> np.ndarray:
    """Return N x D embeddings: each slice resized to size x size, mean of the last block's tokens."""
    encoder.eval()
    last_block = encoder.depth - 1
    features = []
    for start in range(0, len(index), 32):
        images = [torch.from_numpy(index[i]).view(1, 1, *index[i].shape) for i in range(start, min(start + 32, len(index)))]
        batch = torch.cat([F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False) for image in images])
        _, intermediates = encoder.forward_intermediates(batch, indices=[last_block])  # list of B x D x h x w
        features.append(intermediates[0].mean(dim=(2, 3)))
    return torch.cat(features).numpy()


@torch.no_grad()
def patch_probe(encoder: MRICoreEncoder, dataset: Path, size: int, folds: int = 5) -> float:
    """Return the cross-validated ROC AUC of a linear classifier for 'patch contains >= 25 % foreground'."""
    encoder.eval()
    features, targets, groups = [], [], []
    for number, label_file in enumerate(sorted((dataset / "labelsTr").glob("*.nii.gz"))):
        case = label_file.name[: -len(".nii.gz")]
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "imagesTr" / f"{case}_0000.nii.gz")))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        batch = F.interpolate(torch.from_numpy(image.astype(np.float32))[:, None], size=(size, size), mode="bilinear",
                              align_corners=False)
        _, intermediates = encoder.forward_intermediates(batch, indices=[encoder.depth - 1])
        tokens = intermediates[0]  # slices x D x h x w
        foreground = F.adaptive_avg_pool2d(torch.from_numpy((label > 0).astype(np.float32))[:, None], tokens.shape[2:])
        features.append(tokens.permute(0, 2, 3, 1).reshape(-1, tokens.shape[1]).numpy())
        targets.append((foreground.reshape(-1) >= 0.25).numpy())
        groups.append(np.full(targets[-1].shape, number))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    targets = np.concatenate(targets)
    scores = cross_val_predict(classifier, np.concatenate(features), targets, groups=np.concatenate(groups),
                               cv=GroupKFold(folds), method="predict_proba")[:, 1]
    return float(roc_auc_score(targets, scores))


def pretrain_for_probe(data: list[str], work_dir: Path, iterations: int, size: int) -> tuple[Path, float]:
    out = work_dir / "probe_run"
    shutil.rmtree(out, ignore_errors=True)
    config = PretrainConfig(
        data=data, out=str(out), preset="tiny", iterations=iterations, batch_size=16, global_size=size,
        local_size=64, num_local_crops=4, lr=5e-3, save_every=10_000, log_every=25,
    )
    started = time.perf_counter()
    result = pretrain(config)
    return result.teacher_path, time.perf_counter() - started


def probe(data: list[str], checkpoint: Path, training_seconds: float, labelled: Path | None,
          random_seeds: list[int]) -> list[dict]:
    """Probe the checkpoint and one random initialisation of its preset per seed, and return a row per encoder."""
    trained_encoder, _ = build_encoder_from_checkpoint(checkpoint)
    size = trained_encoder.img_size
    encoders = []
    for seed in random_seeds:
        torch.manual_seed(seed)
        encoders.append((f"random init (seed {seed})", MRICoreEncoder(trained_encoder.preset_name, img_size=size)))
    encoders.append(("pre-trained", trained_encoder))

    index = SliceIndex(data)
    positions = np.array([index.slice_position(i) for i in range(len(index))])
    thirds = np.minimum((positions * 3).astype(int), 2)
    region = np.array([Path(index.volume_of(i).path).name.startswith("pgbm") for i in range(len(index))]).astype(int)
    groups = np.array([index.entries[i][0] for i in range(len(index))])
    names = [Path(index.volume_of(i).path).name for i in range(len(index))]
    sequence = np.array([next((s for s in ("FLAIR", "T1", "T2") if f"_{s}" in name), "") for name in names])
    brain = sequence != ""
    # The study is the file name without the sequence: pgbm001_tp1_FLAIR -> pgbm001_tp1.
    studies = np.array([name.rsplit("_", 1)[0] for name in names])

    rows = []
    for name, encoder in encoders:
        embeddings = slice_embeddings(encoder, index, size)
        neighbours = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5))
        row = {"encoder": name, "slices": len(index), "training_s": training_seconds if name == "pre-trained" else 0.0}
        for label_name, labels in (("position_thirds", thirds), ("region", region)):
            scores = cross_val_score(neighbours, embeddings, labels, groups=groups, cv=LeaveOneGroupOut())
            row[label_name] = float(np.mean(scores))
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores = cross_val_score(linear, embeddings[brain], sequence[brain], groups=studies[brain], cv=LeaveOneGroupOut())
        row["sequence"] = float(np.mean(scores))
        row["sequence_chance"] = float(max(np.mean(sequence[brain] == value) for value in set(sequence[brain])))
        if labelled is not None:
            row["patch_auc"] = patch_probe(encoder, labelled, size)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="folders of unlabelled NIfTI volumes")
    parser.add_argument("--work-dir", type=Path, default=Path("pretrain_benchmark_output"), help="folder for the runs")
    parser.add_argument("--probe-iterations", type=int, default=150, help="pre-training iterations before the probe")
    parser.add_argument("--probe-size", type=int, default=128, help="global crop and embedding size of the probe run")
    parser.add_argument("--probe-checkpoint", type=Path,
                        help="probe this pre-trained teacher_encoder.pth instead of pre-training a tiny encoder first")
    parser.add_argument("--labelled", type=Path, help="nnU-Net raw dataset with labelsTr for the patch probe")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the random initialisations to compare with (default 0 1 2)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_throughput:
        rows = measure_throughput(args.data, args.work_dir)
        print("\n| preset | batch | crops per slice | iterations | s / iteration | slices / s |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['preset']} | {row['batch']} | {row['crops']} | {row['iterations']} | "
                  f"{row['s_per_iteration']:.2f} | {row['slices_per_s']:.2f} |")

    if args.probe_checkpoint is not None:
        checkpoint, training_seconds = args.probe_checkpoint, float("nan")
    else:
        checkpoint, training_seconds = pretrain_for_probe(args.data, args.work_dir, args.probe_iterations, args.probe_size)
    rows = probe(args.data, checkpoint, training_seconds, args.labelled, args.random_seeds)
    print(f"\nProbed {checkpoint}")
    print("\n| encoder | slices | k-NN: slice position (thirds) | k-NN: brain vs hippocampus | "
          "linear: sequence (brain, study left out) | linear: foreground patch AUC | training s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        patch = f"{row['patch_auc']:.3f}" if "patch_auc" in row else "not run"
        print(f"| {row['encoder']} | {row['slices']} | {row['position_thirds']:.3f} | {row['region']:.3f} | "
              f"{row['sequence']:.3f} (majority {row['sequence_chance']:.3f}) | {patch} | {row['training_s']:.0f} |")


if __name__ == "__main__":
    main()
