"""The `mricore_nnunet` command line: the only place that parses arguments; each command calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from mricore_nnunet import planning
from mricore_nnunet.inference import DEFAULT_TILE_BATCH_SIZE


def _positive_int(text: str) -> int:
    """Parse a whole number of at least 1, for argparse."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number of at least 1")
    return int(text)


def _command_env(args: argparse.Namespace) -> int:
    from mricore_nnunet.nnunet_env import environment_lines

    print("# Add these lines to your shell profile so that nnU-Net finds its folders and our trainers:")
    print("\n".join(environment_lines(args.base)))
    return 0


def _command_plan(args: argparse.Namespace) -> int:
    from mricore_nnunet.plan import plan_dataset

    plans = plan_dataset(
        args.dataset, checkpoint=args.checkpoint, input_size=args.input_size, preset=args.preset,
        memory_gib=args.memory_gb, random_init=args.random_init, num_processes=args.num_processes,
        plans_name=args.plans_name, replace_nonfinite=args.replace_nonfinite, batch_size=args.batch_size,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    print(f"Plans written to {plans}. Train with: nnUNetv2_train {args.dataset} 2d FOLD -tr MRICoreTrainer -p {args.plans_name}")
    return 0


def _command_inspect(args: argparse.Namespace) -> int:
    from mricore_nnunet.checkpoints import inspect_checkpoint

    print(inspect_checkpoint(args.checkpoint))
    return 0


def _command_embed(args: argparse.Namespace) -> int:
    from mricore_nnunet.embed import embed_images

    written = embed_images(
        args.input, args.output, checkpoint=args.checkpoint, preset=args.preset, img_size=args.input_size,
        device=args.device, batch_size=args.batch_size, overwrite=args.overwrite,
    )
    print(f"Wrote {len(written)} embedding files to {args.output}")
    return 0


def _command_predict(args: argparse.Namespace) -> int:
    from mricore_nnunet import inference

    device = inference.resolve_device(args.device)
    print(f"Device: {device.type}" + (" (auto-detected)" if args.device == "auto" else ""), flush=True)
    if device.type == "cpu":
        print("Predicting on the CPU. This is expected: it works and gives the same results, but it is much "
              "slower than on a GPU.", flush=True)
    if args.model is not None:
        model_folder = Path(args.model)
    else:
        model_folder = inference.find_model_folder(args.dataset, args.trainer, args.plans, args.configuration)
    result = inference.predict(
        args.input, args.output, model_folder, folds=args.folds, device=device, use_mirroring=not args.no_tta,
        save_probabilities=args.save_probabilities, overwrite=args.overwrite,
        replace_nonfinite=args.replace_nonfinite, tile_batch_size=args.tile_batch_size,
    )
    print(f"Predicted {len(result.predicted)} case(s) into {result.output_folder}.")
    if result.skipped:
        print(f"Skipped {len(result.skipped)} case(s) whose outputs already exist; --overwrite predicts them again.")
    return 0


def _command_convert(args: argparse.Namespace) -> int:
    from mricore_nnunet.datasets import convert_task

    out_raw = args.out or os.environ.get("nnUNet_raw")
    if not out_raw:
        raise ValueError("No output folder: pass --out NNUNET_RAW or set the nnUNet_raw environment variable "
                         "(`mricore_nnunet env` prints the line).")
    try:
        dataset_dir = convert_task(args.task, args.source_dir, out_raw, args.dataset_id, overwrite=args.overwrite)
    except FileExistsError as error:
        # main() reports ValueError, RuntimeError and FileNotFoundError; an existing output is the same kind of
        # user-facing failure.
        print(f"mricore_nnunet convert: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {dataset_dir}. Check and plan it with: mricore_nnunet plan -d {dataset_dir.name}")
    return 0


def _command_overlay(args: argparse.Namespace) -> int:
    from mricore_nnunet.overlay import write_overlays

    written = write_overlays(args.images, args.segmentations, args.output, num_slices=args.slices)
    print(f"Wrote {len(written)} overlay PNG files to {args.output}")
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from mricore_nnunet.demo import run_demo

    return run_demo(
        work_dir=args.work_dir, checkpoint=args.checkpoint, num_epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, batch_size=args.batch_size, input_size=args.input_size,
        device=args.device,
    )


def _command_pretrain(args: argparse.Namespace) -> int:
    from mricore_nnunet.ssl import PretrainConfig, pretrain

    config = PretrainConfig(
        data=args.data, out=args.out, init=args.init, preset=args.preset, iterations=args.iterations,
        batch_size=args.batch_size, global_size=args.global_size, local_size=args.local_size,
        num_local_crops=args.num_local_crops, lr=args.lr, warmup_iterations=args.warmup_iterations, seed=args.seed,
        device=args.device, amp=args.amp, save_every=args.save_every, log_every=args.log_every,
        stop_after=args.stop_after, sinkhorn=args.sinkhorn, num_prototypes=args.num_prototypes,
        head_hidden_dim=args.head_hidden_dim, head_bottleneck_dim=args.head_bottleneck_dim,
        separate_ibot_head=not args.shared_ibot_head, slice_axis=args.slice_axis, num_workers=args.num_workers,
    )
    result = pretrain(config)
    if result.teacher_path is not None:
        print(f"Teacher encoder written to {result.teacher_path}")
    else:
        print(f"Stopped at iteration {result.end_iteration}; training state in {result.state_path}. Rerun the same command to continue.")
    return 0


def _slice_count(text: str) -> int | None:
    """Parse --slices-per-volume: a positive number, or 'all' (returned as None)."""
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {text!r}") from None


def _command_fewshot(args: argparse.Namespace) -> int:
    from mricore_nnunet.fewshot import create_fewshot_dataset

    result = create_fewshot_dataset(
        args.dataset, args.volumes, seed=args.seed, slices_per_volume=args.slices_per_volume,
        num_validation_volumes=args.validation_volumes, output_id=args.output_id, slice_axis=args.slice_axis,
        overwrite=args.overwrite,
    )
    print(f"Wrote {result.dataset_dir}: {len(result.training_cases)} training and {len(result.validation_cases)} "
          f"validation volumes with {args.slices_per_volume or 'all'} annotated slice(s) each, "
          f"{len(result.test_cases)} test cases.")
    print(f"Next: mricore_nnunet plan -d {result.dataset_name} --checkpoint FILE, then nnUNetv2_train "
          f"{result.dataset_name} 2d 0 -tr MRICoreTrainer -p MRICorePlans (fold 0 is the split in splits_final.json)")
    return 0


def _command_evaluate(args: argparse.Namespace) -> int:
    from mricore_nnunet.evaluation import evaluate_folder

    summary = evaluate_folder(
        args.reference, args.prediction, args.labels, nsd_tolerance_mm=args.nsd_tolerance,
        ignore_label=args.ignore_label, foreground_slices_only=args.foreground_slices_only,
        slice_axis=None if args.slice_axis == "auto" else int(args.slice_axis), output_file=args.output,
    )
    print(f"{len(summary['per_case'])} case(s), NSD tolerance {args.nsd_tolerance} mm"
          + (", foreground slices only" if args.foreground_slices_only else ""))
    print("label  Dice mean (std)     NSD mean (std)")
    for label, metrics in summary["per_label"].items():
        dice, nsd = metrics["dice"], metrics["nsd"]
        print(f"{label:>5}  {dice['mean']:.4f} ({dice['std']:.4f})     {nsd['mean']:.4f} ({nsd['std']:.4f})")
    print(f" mean  {summary['foreground_mean']['dice']:.4f}              {summary['foreground_mean']['nsd']:.4f}")
    if args.output is not None:
        print(f"Summary written to {args.output}")
    return 0


def _command_probe(args: argparse.Namespace) -> int:
    from mricore_nnunet.analysis import run_probe

    result = run_probe(
        args.csv, args.output, checkpoint=args.checkpoint, preset=args.preset, img_size=args.input_size,
        level=args.level, folds=args.folds, device=args.device, batch_size=args.batch_size, seed=args.seed,
    )
    print(result.report_markdown.read_text(encoding="utf-8"), end="")
    print(f"Report: {result.report_json}, {result.report_markdown}, {result.confusion_png}; predictions: {result.predictions_csv}")
    return 0


def _command_zeroshot(args: argparse.Namespace) -> int:
    from mricore_nnunet.analysis import evaluate_zeroshot, segment_from_prompt

    encoder_options = dict(
        checkpoint=args.checkpoint, preset=args.preset, img_size=args.input_size, device=args.device,
        batch_size=args.batch_size, seed=args.seed,
    )
    if args.image is not None:
        if args.point is None and args.box is None:
            raise ValueError("One-click mode (--image) needs a prompt: --point Z Y X or --box Z Y0 X0 Y1 X1.")
        result = segment_from_prompt(
            args.image, args.output, point=args.point, box=args.box, threshold=args.threshold,
            similarity_map=args.similarity_map, **encoder_options,
        )
        print(f"Threshold {result.threshold:.4f}: {result.marked_voxels} of {result.total_voxels} voxels marked; "
              f"mask written to {result.output}")
        return 0

    if args.labels is None:
        raise ValueError("Evaluation mode (--images) needs --labels, the folder of reference label maps.")
    if args.point is not None or args.box is not None or args.threshold is not None:
        raise ValueError("--point, --box and --threshold belong to one-click mode; use them with --image FILE.")
    result = evaluate_zeroshot(
        args.images, args.labels, args.output, clusters=args.clusters, mode=args.mode, max_cases=args.max_cases,
        **encoder_options,
    )
    names = list(result.report["results"][0]["dice_per_label"])
    print("clusters  " + "  ".join(f"{name:>10}" for name in names) + "        mean")
    for row in result.report["results"]:
        values = [row["dice_per_label"][name] for name in names] + [row["mean_dice"]]
        print(f"{row['clusters']:>8}  " + "  ".join("       n/a" if value is None else f"{value:>10.4f}" for value in values))
    print(f"Report: {result.report_json}, plot: {result.plot_png}")
    return 0


def _command_similarity(args: argparse.Namespace) -> int:
    from mricore_nnunet.analysis import compare_image_sets
    from mricore_nnunet.analysis.similarity import format_similarity_table

    result = compare_image_sets(
        args.a, args.b, args.output, metrics=args.metric, checkpoint=args.checkpoint, preset=args.preset,
        img_size=args.input_size, device=args.device, batch_size=args.batch_size, max_volumes=args.max_volumes,
        seed=args.seed,
    )
    print(format_similarity_table(result.report))
    print(f"Report: {result.report_json}")
    return 0


def _add_encoder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="encoder checkpoint; without one the preset's encoder has random weights from --seed and a warning is logged")
    parser.add_argument("--preset", default="tiny", help="encoder preset when no checkpoint is given (default tiny)")
    parser.add_argument("--input-size", type=int, help="slice size in pixels fed to the encoder, a multiple of 16 (default: the checkpoint's, else 256)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random encoder weights, folds, k-means and subsets (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mricore_nnunet", description="The MRI-CORE foundation-model encoder in nnU-Net v2."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    env = commands.add_parser("env", help="print the environment lines nnU-Net needs to find its folders and our trainers")
    env.add_argument("--base", help="folder for nnU-Net's three data folders, where they are not set yet (default ~/nnUNet_data)")
    env.set_defaults(run=_command_env)

    plan = commands.add_parser("plan", help="validate, fingerprint, plan (MRICorePlans) and preprocess a dataset for the 2d configuration")
    plan.add_argument("-d", "--dataset", required=True, help="dataset id or name in nnUNet_raw, such as 4 or Dataset004_Hippocampus")
    plan.add_argument("--checkpoint", help="encoder checkpoint (MRI-CORE, SAM or mricore_nnunet) recorded in the plans")
    plan.add_argument("--input-size", type=int, default=planning.DEFAULT_INPUT_SIZE,
                      help="side of the encoder input in pixels, a multiple of 16 (default 256; 512 and 1024 are common)")
    plan.add_argument("--preset", help="encoder preset when no checkpoint is given (vit_b, sam_vit_b, small, tiny; default vit_b)")
    plan.add_argument("--memory-gb", type=float, default=8.0, help="memory of the training device in GiB, for the batch size (default 8)")
    plan.add_argument("--batch-size", type=int, help="fixed batch size instead of the estimate from --memory-gb")
    plan.add_argument("--gradient-checkpointing", action="store_true",
                      help="recompute encoder activations in the backward pass: less memory, about a third more compute")
    plan.add_argument("--random-init", action="store_true",
                      help="record a deliberate random encoder initialisation, so MRICoreTrainer trains without a checkpoint")
    plan.add_argument("-np", "--num-processes", type=int, default=1, help="processes for fingerprinting and preprocessing (default 1)")
    plan.add_argument("--plans-name", default=planning.PLANS_NAME, help=f"plans identifier (default {planning.PLANS_NAME})")
    plan.add_argument("--replace-nonfinite", action="store_true",
                      help="accept images with NaN or Inf voxels: they are counted and reported, and nnU-Net's "
                           "SimpleITK reader turns them into 0 (as SimpleITK 2.5 does for NIfTI files)")
    plan.set_defaults(run=_command_plan)

    inspect = commands.add_parser("inspect-checkpoint", help="show a checkpoint's layout, metadata, load report and parameter counts")
    inspect.add_argument("checkpoint")
    inspect.set_defaults(run=_command_inspect)

    embed = commands.add_parser("embed", help="write per-slice and per-volume encoder embeddings (.npz) for NIfTI files")
    embed.add_argument("-i", "--input", nargs="+", required=True, help="NIfTI files or folders of them")
    embed.add_argument("-o", "--output", required=True, help="output folder for <case>.npz files")
    embed.add_argument("--checkpoint", help="encoder checkpoint; without one the encoder is random and a warning is logged")
    embed.add_argument("--preset", default="tiny", help="encoder preset when no checkpoint is given (default tiny)")
    embed.add_argument("--input-size", type=int, help="slice size in pixels fed to the encoder (default: the checkpoint's, else 256)")
    embed.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    embed.add_argument("--batch-size", type=int, default=16, help="slices per forward pass (default 16)")
    embed.add_argument("--overwrite", action="store_true", help="recompute existing outputs")
    embed.set_defaults(run=_command_embed)

    predict = commands.add_parser(
        "predict", help="check new scans and segment them with a trained model (nnU-Net's predictor, resumable)")
    predict.add_argument("-i", "--input", required=True,
                         help="folder of images named <case>_XXXX<file_ending>, or one such image file")
    predict.add_argument("-o", "--output", required=True, help="output folder for <case><file_ending> segmentations")
    model = predict.add_mutually_exclusive_group(required=True)
    model.add_argument("-m", "--model", help="trained model folder TRAINER__PLANS__CONFIGURATION (no nnU-Net variables needed)")
    model.add_argument("-d", "--dataset", help="dataset id or name whose model lies in $nnUNet_results")
    predict.add_argument("-f", "--folds", nargs="+", help="folds to ensemble, numbers or 'all' (default: every fold_N with a final checkpoint)")
    predict.add_argument("-tr", "--trainer", default="MRICoreTrainer", help="trainer class of the model, with -d (default MRICoreTrainer)")
    predict.add_argument("-p", "--plans", default=planning.PLANS_NAME, help=f"plans identifier, with -d (default {planning.PLANS_NAME})")
    predict.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration, with -d (default 2d)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                         help="device; auto takes cuda, else mps, else cpu (default auto)")
    predict.add_argument("--no-tta", action="store_true", help="skip test-time mirroring: faster, slightly less accurate")
    predict.add_argument("--tile-batch-size", type=_positive_int, default=DEFAULT_TILE_BATCH_SIZE,
                         help=f"sliding-window tiles per forward pass (default {DEFAULT_TILE_BATCH_SIZE}; "
                              "1 is nnUNetv2_predict's behaviour). Lower it if the GPU runs out of memory")
    predict.add_argument("--save-probabilities", action="store_true", help="also write <case>.npz and <case>.pkl as nnU-Net does, for ensembling")
    predict.add_argument("--overwrite", action="store_true", help="predict cases again whose outputs exist (default: skip them)")
    predict.add_argument("--replace-nonfinite", action="store_true",
                         help="accept images with NaN or Inf voxels, and predict temporary copies with them set to 0, as in training")
    predict.set_defaults(run=_command_predict)

    overlay = commands.add_parser("overlay", help="write PNG overlays of segmentations on their scans, for a visual check")
    overlay.add_argument("-i", "--images", required=True, help="folder of scans <case>_0000<ending> (channel 0 is shown), or one scan")
    overlay.add_argument("-s", "--segmentations", required=True, help="folder of label maps <case><ending>, or one label map")
    overlay.add_argument("-o", "--output", required=True, help="output folder for <case>_slice<N>.png files")
    overlay.add_argument("--slices", type=int, default=3, help="slices per case, where the foreground is largest (default 3)")
    overlay.set_defaults(run=_command_overlay)

    from mricore_nnunet.datasets import TASKS

    task_lines = "\n".join(f"  {name:<15} {task.summary} (default id {task.default_dataset_id})"
                            for name, task in TASKS.items())
    convert = commands.add_parser(
        "convert", help="convert a downloaded public MRI release into an nnU-Net raw dataset (no download)",
        description="Convert a release you have downloaded into nnUNet_raw/DatasetNNN_Name with imagesTr, "
                    "labelsTr and dataset.json. The layout each task expects is described in "
                    "mricore_nnunet/datasets/<module>.py and datasets_json/README.md.",
        epilog="tasks:\n" + task_lines, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("task", choices=list(TASKS), metavar="TASK", help="task to write; see the list below")
    convert.add_argument("source_dir", metavar="SOURCE_DIR", help="folder of the downloaded (and extracted) release")
    convert.add_argument("--out", metavar="NNUNET_RAW", help="nnU-Net raw folder to write into (default $nnUNet_raw)")
    convert.add_argument("--dataset-id", type=int, help="nnU-Net dataset id, 1 to 999 (default: the task's id below)")
    convert.add_argument("--overwrite", action="store_true", help="replace the output dataset folder if it exists")
    convert.set_defaults(run=_command_convert)

    demo = commands.add_parser("demo", help="the main job on the bundled hippocampus MRI: plan, train fold 0, predict, score")
    demo.add_argument("--work-dir", type=Path, default=Path("demo_output"), help="folder for nnU-Net's data and results (default ./demo_output)")
    demo.add_argument("--checkpoint", help="encoder checkpoint; without one the tiny preset starts from random weights")
    demo.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    demo.add_argument("--iterations-per-epoch", type=int, default=50, help="training iterations per epoch (default 50)")
    demo.add_argument("--batch-size", type=int, default=8, help="slices per training iteration (default 8)")
    demo.add_argument("--input-size", type=int, default=128, help="encoder input in pixels (default 128, quick on a CPU)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    demo.set_defaults(run=_command_demo)

    from mricore_nnunet.ssl.config import PretrainConfig

    defaults = PretrainConfig()
    pretrain = commands.add_parser(
        "pretrain", help="self-supervised pre-training of the encoder on unlabelled MRI (DINOv2 family; torchrun for several processes)"
    )
    pretrain.add_argument("--data", nargs="+", required=True,
                          help="folders of NIfTI files, nnU-Net raw datasets or MSD task folders (imagesTr and imagesTs are read)")
    pretrain.add_argument("--out", required=True, help="output folder: last.pt, teacher_encoder.pth, data_manifest.json, metrics.jsonl")
    pretrain.add_argument("--init", help="encoder checkpoint to start from (SAM, MRI-CORE or mricore_nnunet); random without it")
    pretrain.add_argument("--preset", default=defaults.preset, help=f"encoder preset when no --init is given (default {defaults.preset})")
    pretrain.add_argument("--iterations", type=int, default=defaults.iterations, help=f"optimizer steps in the whole run (default {defaults.iterations})")
    pretrain.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"slices per process and iteration (default {defaults.batch_size})")
    pretrain.add_argument("--global-size", type=int, default=defaults.global_size,
                          help=f"side of the 2 global crops in pixels, a multiple of 16; also the exported input size (default {defaults.global_size})")
    pretrain.add_argument("--local-size", type=int, default=defaults.local_size, help=f"side of the local crops in pixels, a multiple of 16 (default {defaults.local_size})")
    pretrain.add_argument("--num-local-crops", type=int, default=defaults.num_local_crops, help=f"local crops per slice (default {defaults.num_local_crops})")
    pretrain.add_argument("--lr", type=float, default=defaults.lr,
                          help=f"peak learning rate for a global batch of 256; scaled linearly with the global batch (default {defaults.lr})")
    pretrain.add_argument("--warmup-iterations", type=int, help="learning-rate warm-up in iterations (default 10%% of --iterations)")
    pretrain.add_argument("--seed", type=int, default=defaults.seed, help=f"seed of weights, data order and augmentation (default {defaults.seed})")
    pretrain.add_argument("--device", default=defaults.device, help="cpu or cuda; under torchrun each process takes cuda:LOCAL_RANK (default cpu)")
    pretrain.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward passes")
    pretrain.add_argument("--save-every", type=int, default=defaults.save_every, help=f"iterations between saves of last.pt (default {defaults.save_every})")
    pretrain.add_argument("--log-every", type=int, default=defaults.log_every, help=f"iterations between progress lines (default {defaults.log_every})")
    pretrain.add_argument("--stop-after", type=int, help="stop after this iteration with the state saved, keeping the schedule of --iterations")
    pretrain.add_argument("--sinkhorn", action="store_true", help="Sinkhorn-Knopp teacher targets instead of centring")
    pretrain.add_argument("--num-prototypes", type=int, help="prototypes of each head (default 65536; 4096 for the tiny preset)")
    pretrain.add_argument("--head-hidden-dim", type=int, help="hidden width of the head MLPs (default 2048; 512 for the tiny preset)")
    pretrain.add_argument("--head-bottleneck-dim", type=int, help="bottleneck width of the heads (default 256; 128 for the tiny preset)")
    pretrain.add_argument("--shared-ibot-head", action="store_true", help="one head for the DINO and iBOT losses instead of two")
    pretrain.add_argument("--slice-axis", type=int, choices=(0, 1, 2),
                          help="numpy axis (z, y, x order) to slice along (default: the axis of largest spacing)")
    pretrain.add_argument("--num-workers", type=int, default=defaults.num_workers, help=f"data loader worker processes (default {defaults.num_workers})")
    pretrain.set_defaults(run=_command_pretrain)

    fewshot = commands.add_parser(
        "fewshot", help="derive a raw dataset in which only M slices of K random volumes are labelled (the rest: ignore label)")
    fewshot.add_argument("-d", "--dataset", required=True, help="source dataset id or name in nnUNet_raw, such as 4 or Dataset004_Hippocampus")
    fewshot.add_argument("--volumes", type=int, required=True, help="training volumes K to draw")
    fewshot.add_argument("--slices-per-volume", type=_slice_count, default=1,
                         help="annotated slices M per volume, or 'all' for fully labelled volumes (default 1)")
    fewshot.add_argument("--validation-volumes", type=int, help="validation volumes V, annotated like the training ones (default K)")
    fewshot.add_argument("--seed", type=int, required=True, help="seed of the draw; the same seed gives the same volumes and slices")
    fewshot.add_argument("--output-id", type=int, help="dataset id of the new dataset (default: source id + 500)")
    fewshot.add_argument("--slice-axis", choices=("auto", "0", "1", "2"), default="auto",
                         help="numpy axis (z, y, x order) to draw slices along (default auto: the axis of largest median spacing)")
    fewshot.add_argument("--overwrite", action="store_true", help="replace an existing folder of the same name")
    fewshot.set_defaults(run=_command_fewshot)

    evaluate = commands.add_parser("evaluate", help="score predictions against reference labels: 3D Dice and NSD per case and label")
    evaluate.add_argument("-ref", "--reference", required=True, help="folder of reference label files, such as a dataset's labelsTs")
    evaluate.add_argument("-pred", "--prediction", required=True, help="folder of predictions with the same file names")
    evaluate.add_argument("-l", "--labels", type=int, nargs="+", required=True, help="label values to score, such as 1 2")
    evaluate.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    evaluate.add_argument("--ignore-label", type=int, help="reference label value whose voxels are not scored")
    evaluate.add_argument("--foreground-slices-only", action="store_true",
                          help="score only the slices along the slice axis where the reference has foreground")
    evaluate.add_argument("--slice-axis", choices=("auto", "0", "1", "2"), default="auto",
                          help="numpy axis (z, y, x order) for --foreground-slices-only (default auto: each case's axis of largest spacing)")
    evaluate.add_argument("-o", "--output", help="JSON file for the summary with every case")
    evaluate.set_defaults(run=_command_evaluate)

    probe = commands.add_parser("probe", help="linear probe: cross-validated logistic regression on frozen slice or volume embeddings")
    probe.add_argument("--csv", required=True, help="CSV with columns file, label and optionally slice (paths relative to the CSV)")
    probe.add_argument("-o", "--output", required=True, help="output folder: probe_report.json/.md, confusion_matrix.png, predictions.csv, embeddings/")
    probe.add_argument("--level", choices=("slice", "volume"),
                       help="one sample per slice or per volume (default: slice when the CSV has slice indices, else volume)")
    probe.add_argument("--folds", type=int, default=5, help="folds of stratified cross-validation (default 5)")
    _add_encoder_options(probe)
    probe.set_defaults(run=_command_probe)

    zeroshot = commands.add_parser(
        "zeroshot", help="segmentation without training: k-means of patch features scored by Dice, or one-click by feature similarity")
    source = zeroshot.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="evaluation mode: folder of images <case>_0000.nii.gz")
    source.add_argument("--image", help="one-click mode: the volume to segment")
    zeroshot.add_argument("--labels", help="evaluation mode: folder of reference label maps <case>.nii.gz")
    zeroshot.add_argument("-o", "--output", required=True, help="evaluation: output folder for zeroshot_report.json and zeroshot_dice.png; one-click: output mask .nii.gz")
    zeroshot.add_argument("--clusters", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="k-means cluster counts to score (default 2 4 8 16 32)")
    zeroshot.add_argument("--mode", choices=("slice", "volume"), default="slice",
                          help="cluster each slice on its own or each whole volume at once (default slice)")
    zeroshot.add_argument("--max-cases", type=int, help="score only the first N cases in name order")
    prompt = zeroshot.add_mutually_exclusive_group()
    prompt.add_argument("--point", type=int, nargs=3, metavar=("Z", "Y", "X"), help="one-click prompt: voxel index in numpy (z, y, x) order")
    prompt.add_argument("--box", type=int, nargs=5, metavar=("Z", "Y0", "X0", "Y1", "X1"), help="one-click prompt: box on slice Z, corners included")
    zeroshot.add_argument("--threshold", type=float, help="cosine similarity above which voxels are marked (default: Otsu's threshold of the volume)")
    zeroshot.add_argument("--similarity-map", help="one-click mode: also write the cosine similarity map to this .nii.gz")
    _add_encoder_options(zeroshot)
    zeroshot.set_defaults(run=_command_zeroshot)

    similarity = commands.add_parser("similarity", help="distance between two image sets in embedding space (Fréchet, MMD, centroid cosine)")
    similarity.add_argument("--a", required=True, help="set A: folder of NIfTI volumes, or a pre-training manifest JSON with a 'files' list")
    similarity.add_argument("--b", required=True, help="set B: folder of NIfTI volumes, or a manifest JSON")
    similarity.add_argument("--metric", nargs="+", choices=("frechet", "mmd", "cosine"), default=["frechet"],
                            help="distances to compute (default frechet)")
    similarity.add_argument("-o", "--output", default="similarity_output",
                            help="output folder for similarity_report.json and cached embeddings (default ./similarity_output)")
    similarity.add_argument("--max-volumes", type=int, help="use a random subset of at most N volumes per set")
    _add_encoder_options(similarity)
    similarity.set_defaults(run=_command_similarity)
    return parser


def main(argv: list[str] | None = None) -> int:
    # timm 1.0.22 uses torch.jit.interface, which torch 2.14 flags on every import; it is not ours to fix.
    warnings.filterwarnings("ignore", message=".*torch.jit.interface.*", category=FutureWarning)
    args = build_parser().parse_args(argv)
    # Our messages only: nnU-Net's libraries log file copies at INFO on the root logger.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("mricore_nnunet")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        # User-facing failures carry their own explanation; a traceback would bury it.
        if args.verbose:
            raise
        print(f"mricore_nnunet {args.command}: error: {error}", file=sys.stderr)
        return 1
    finally:
        # main() also runs in-process (tests, notebooks); a handler left behind would write to a closed stream.
        package_logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
