"""Benchmark of `mricore_nnunet pretrain`: training throughput per preset and a k-NN probe of the features.

Not a test. Run from the repository root:

    python benchmarks/pretrain_benchmark.py --data /path/to/UnlabeledMRI/images --work-dir /tmp/pretrain_bench

1. Throughput: a few iterations of each preset on the data, reporting slices per second after
   the first iteration (which includes start-up).
2. Probe: the tiny preset is pre-trained briefly. Then slice embeddings (mean-pooled tokens of
   the last block) of the pre-trained teacher and of its random initialisation are scored by a
   k-nearest-neighbour classifier with leave-one-volume-out cross-validation. The two labels
   are unseen in training: the slice position in its volume (thirds) and the body region
   (brain if the file name starts with "pgbm", else hippocampus). A third label, the MRI
   sequence (FLAIR, T1 or T2 from the file name), is scored on the brain volumes only.
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
from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
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


def probe(data: list[str], work_dir: Path, iterations: int, size: int) -> list[dict]:
    out = work_dir / "probe_run"
    shutil.rmtree(out, ignore_errors=True)
    config = PretrainConfig(
        data=data, out=str(out), preset="tiny", iterations=iterations, batch_size=16, global_size=size,
        local_size=64, num_local_crops=4, lr=5e-3, save_every=10_000, log_every=25,
    )
    started = time.perf_counter()
    result = pretrain(config)
    training_seconds = time.perf_counter() - started

    index = SliceIndex(data)
    positions = np.array([index.slice_position(i) for i in range(len(index))])
    thirds = np.minimum((positions * 3).astype(int), 2)
    region = np.array([Path(index.volume_of(i).path).name.startswith("pgbm") for i in range(len(index))]).astype(int)
    groups = np.array([index.entries[i][0] for i in range(len(index))])
    names = [Path(index.volume_of(i).path).name for i in range(len(index))]
    sequence = np.array([next((s for s in ("FLAIR", "T1", "T2") if f"_{s}" in name), "") for name in names])
    brain = sequence != ""

    torch.manual_seed(config.seed)  # the random initialisation the pre-training started from
    random_encoder = MRICoreEncoder("tiny", img_size=size)
    trained_encoder, _ = build_encoder_from_checkpoint(result.teacher_path)
    rows = []
    for name, encoder in (("random init", random_encoder), (f"pre-trained {iterations} it", trained_encoder)):
        embeddings = slice_embeddings(encoder, index, size)
        classifier = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5))
        row = {"encoder": name, "slices": len(index), "training_s": 0.0 if name == "random init" else training_seconds}
        for label_name, labels, selected in (("position_thirds", thirds, slice(None)), ("region", region, slice(None)),
                                             ("sequence", sequence, brain)):
            scores = cross_val_score(classifier, embeddings[selected], labels[selected], groups=groups[selected],
                                     cv=LeaveOneGroupOut())
            row[label_name] = float(np.mean(scores))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="folders of unlabelled NIfTI volumes")
    parser.add_argument("--work-dir", type=Path, default=Path("pretrain_benchmark_output"), help="folder for the runs")
    parser.add_argument("--probe-iterations", type=int, default=150, help="pre-training iterations before the probe")
    parser.add_argument("--probe-size", type=int, default=128, help="global crop and embedding size of the probe run")
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

    rows = probe(args.data, args.work_dir, args.probe_iterations, args.probe_size)
    print("\n| encoder | slices | k-NN accuracy: slice position (thirds) | brain vs hippocampus | sequence (brain only) | training s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['encoder']} | {row['slices']} | {row['position_thirds']:.3f} | {row['region']:.3f} | "
              f"{row['sequence']:.3f} | {row['training_s']:.0f} |")


if __name__ == "__main__":
    main()
