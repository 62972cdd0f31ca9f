"""Speed and memory of the MRI-CORE network, as ratios measured within one process per figure.

    python benchmarks/performance.py                 # every figure, each in its own process
    python benchmarks/performance.py --figure NAME   # one figure, printed as JSON

Every figure compares two measurements taken in the same process, one right after the other, so the
ratio holds on a noisy machine even where the absolute numbers do not. The results go to
benchmarks/results/performance.json and .md with a description of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mricore_nnunet.encoder import MRICoreEncoder
from mricore_nnunet.network import MRICoreSegmentationNetwork
from mricore_nnunet.planning import decoder_channels_for

RESULTS = Path(__file__).resolve().parent / "results"
HIPPOCAMPUS_SLICE = (48, 36)  # median in-plane size of the bundled hippocampus crops, in voxels at 1 mm


def machine_description() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def seconds_per_call(function, repeats: int, warmup: int = 1) -> float:
    """Return the median wall time of `function()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def segmentation_network(preset: str, size: int, **kwargs) -> MRICoreSegmentationNetwork:
    return MRICoreSegmentationNetwork(
        1, 3, preset=preset, img_size=size, decoder_channels=decoder_channels_for(preset), **kwargs
    )


def nnunet_default_2d_network() -> tuple[torch.nn.Module, list[int]]:
    """Build the 2D PlainConvUNet nnU-Net 2.8.1 plans for the hippocampus crops (patch 56 x 40)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    patch = [56, 40]
    network = PlainConvUNet(
        input_channels=1, n_stages=4, features_per_stage=[32, 64, 128, 256], conv_op=torch.nn.Conv2d,
        kernel_sizes=[[3, 3]] * 4, strides=[[1, 1], [2, 2], [2, 2], [2, 2]], n_conv_per_stage=[2] * 4,
        num_classes=3, n_conv_per_stage_decoder=[2] * 3, conv_bias=True, norm_op=torch.nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    )
    return network, patch


def figure_inference() -> dict:
    """Slices per second: the planned 256 px input against the official 1024 px and nnU-Net's 2D CNN."""
    batch = 4
    results = {}
    with torch.inference_mode():
        for size in (256, 1024):
            network = segmentation_network("vit_b", size).eval()
            image = torch.randn(batch, 1, size, size)
            seconds = seconds_per_call(lambda: network(image), repeats=3 if size == 256 else 1)
            results[f"mricore_vit_b_{size}px_slices_per_s"] = batch / seconds
        cnn, patch = nnunet_default_2d_network()
        cnn.eval()
        image = torch.randn(batch, 1, *patch)
        results["nnunet_2d_cnn_slices_per_s"] = batch / seconds_per_call(lambda: cnn(image), repeats=5)
    results["ratio_256_over_1024"] = results["mricore_vit_b_256px_slices_per_s"] / results["mricore_vit_b_1024px_slices_per_s"]
    results["ratio_256_over_nnunet_cnn"] = results["mricore_vit_b_256px_slices_per_s"] / results["nnunet_2d_cnn_slices_per_s"]
    return results


def figure_efficiency() -> dict:
    """Achieved FLOP/s of the ViT-B encoder forward at 512 px against a large torch.mm in the same process."""
    size = 4096
    a, b = torch.randn(size, size), torch.randn(size, size)
    mm_seconds = seconds_per_call(lambda: torch.mm(a, b), repeats=5)
    mm_flops = 2 * size**3 / mm_seconds

    encoder = MRICoreEncoder("vit_b", 512, 1).eval()
    image = torch.randn(1, 1, 512, 512)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            encoder(image)
        flops = counter.get_total_flops()
        encoder_seconds = seconds_per_call(lambda: encoder(image), repeats=3)
    encoder_flops = flops / encoder_seconds
    return {
        "matmul_gflops_per_s": mm_flops / 1e9,
        "encoder_512px_gflop_per_forward": flops / 1e9,
        "encoder_512px_seconds": encoder_seconds,
        "encoder_gflops_per_s": encoder_flops / 1e9,
        "fraction_of_matmul_throughput": encoder_flops / mm_flops,
    }


def figure_training_step() -> dict:
    """Seconds per training iteration of MRICoreTrainer's network (vit_b, 256 px) and nnU-Net's 2D CNN.

    Both at a batch of 2 with AdamW (ours) and SGD (nnU-Net) on random data: the cost of one step,
    without data loading, which nnU-Net runs in background workers.
    """
    batch = 2
    results = {}
    network = segmentation_network("vit_b", 256).train()
    optimizer = torch.optim.AdamW(network.parameters(), 1e-4)
    image, target = torch.randn(batch, 1, 256, 256), torch.randint(0, 3, (batch, 256, 256))

    def step(model, optim, x, y):
        optim.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optim.step()

    results["mricore_vit_b_256px_s_per_iteration"] = seconds_per_call(lambda: step(network, optimizer, image, target), 3)
    cnn, patch = nnunet_default_2d_network()
    cnn.train()
    sgd = torch.optim.SGD(cnn.parameters(), 1e-2, momentum=0.99, nesterov=True)
    cnn_image, cnn_target = torch.randn(batch, 1, *patch), torch.randint(0, 3, (batch, *patch))
    results["nnunet_2d_cnn_s_per_iteration"] = seconds_per_call(lambda: step(cnn, sgd, cnn_image, cnn_target), 5)
    results["ratio_mricore_over_cnn"] = results["mricore_vit_b_256px_s_per_iteration"] / results["nnunet_2d_cnn_s_per_iteration"]
    return results


def peak_memory_child(mode: str, size: int, checkpointing: bool) -> dict:
    """Run one inference or training step and return this process's peak resident memory."""
    network = segmentation_network("vit_b", size, gradient_checkpointing=checkpointing)
    image = torch.randn(1, 1, size, size)
    if mode == "inference":
        with torch.inference_mode():
            network.eval()(image)
    else:
        optimizer = torch.optim.AdamW(network.parameters(), 1e-4)
        network.train()(image).mean().backward()
        optimizer.step()
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def figure_memory() -> dict:
    """Peak resident memory of a fresh process for one ViT-B step at 256, 512 and 1024 px (batch 1)."""
    results = {}
    for mode, checkpointing in (("inference", False), ("training", False), ("training", True)):
        for size in (256, 512, 1024):
            completed = subprocess.run(
                [sys.executable, __file__, "--memory-child", mode, str(size), str(int(checkpointing))],
                capture_output=True, text=True, encoding="utf-8", errors="replace", check=True,
            )
            name = f"{mode}{'_checkpointed' if checkpointing else ''}_{size}px_peak_gib"
            results[name] = json.loads(completed.stdout.strip().splitlines()[-1])["peak_rss_gib"]
    results["checkpointing_saving_1024px"] = results["training_1024px_peak_gib"] / results["training_checkpointed_1024px_peak_gib"]
    return results


def sliding_window_predictor(predictor_class, network: torch.nn.Module, patch: int, **kwargs):
    """Build an nnU-Net predictor around `network`, set up for predict_sliding_window_return_logits only."""
    from types import SimpleNamespace

    predictor = predictor_class(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=torch.device("cpu"),
                                perform_everything_on_device=False, allow_tqdm=False, **kwargs)
    predictor.network = network.eval()
    predictor.configuration_manager = SimpleNamespace(patch_size=[patch, patch])
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=3)
    predictor.allowed_mirroring_axes = (0, 1)
    return predictor


def figure_tile_batching() -> dict:
    """Time nnU-Net's sliding window (one tile per call) and TileBatchingPredictor on the same volume."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from mricore_nnunet.inference import DEFAULT_TILE_BATCH_SIZE
    from mricore_nnunet.tile_batching import TileBatchingPredictor

    results = {}
    # The hippocampus crops have about 36 slices of 48 x 36 voxels, so the tiny preset needs one 64 px
    # tile per slice. The ViT-B case is 8 slices at the default 256 px input.
    for preset, size, slices in (("tiny", 64, 36), ("vit_b", 256, 8)):
        network = segmentation_network(preset, size)
        volume = torch.randn(1, slices, size, size)
        stock = sliding_window_predictor(nnUNetPredictor, network, size)
        batched = sliding_window_predictor(TileBatchingPredictor, network, size, tile_batch_size=DEFAULT_TILE_BATCH_SIZE)
        repeats = 3 if preset == "tiny" else 1
        with torch.inference_mode():
            stock_seconds = seconds_per_call(lambda: stock.predict_sliding_window_return_logits(volume), repeats)
            batched_seconds = seconds_per_call(lambda: batched.predict_sliding_window_return_logits(volume), repeats)
        results[f"{preset}_{size}px_{slices}_slices_nnunet_s"] = stock_seconds
        results[f"{preset}_{size}px_{slices}_slices_batched_s"] = batched_seconds
        results[f"{preset}_{size}px_speedup"] = stock_seconds / batched_seconds
    return results


FIGURES = {
    "inference": figure_inference,
    "tile_batching": figure_tile_batching,
    "efficiency": figure_efficiency,
    "training_step": figure_training_step,
    "memory": figure_memory,
}


def write_tables(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "performance.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = ["| figure | measure | value |", "| --- | --- | --- |"]
    for figure, values in results["figures"].items():
        for name, value in values.items():
            lines.append(f"| {figure} | {name} | {value:.3g} |")
    machine = ", ".join(f"{k}: {v}" for k, v in results["machine"].items())
    (RESULTS / "performance.md").write_text(f"Machine: {machine}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figure", choices=sorted(FIGURES), help="run one figure in this process and print JSON")
    parser.add_argument("--memory-child", nargs=3, metavar=("MODE", "SIZE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        mode, size, checkpointing = args.memory_child
        print(json.dumps(peak_memory_child(mode, int(size), bool(int(checkpointing)))))
        return
    if args.figure:
        print(json.dumps(FIGURES[args.figure]()))
        return

    results = {"machine": machine_description(), "figures": {}}
    start = time.monotonic()
    for name in FIGURES:
        print(f"running {name} ...", flush=True)
        completed = subprocess.run([sys.executable, __file__, "--figure", name], capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
        results["figures"][name] = json.loads(completed.stdout.strip().splitlines()[-1])
    results["minutes"] = (time.monotonic() - start) / 60
    write_tables(results)


if __name__ == "__main__":
    main()
