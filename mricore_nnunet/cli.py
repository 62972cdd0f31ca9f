"""The `mricore_nnunet` command line: the only place that parses arguments; each command calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mricore_nnunet import planning


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
        replace_nonfinite=args.replace_nonfinite,
    )
    print(f"Model: {result.model_folder} (folds {', '.join(map(str, result.folds))})")
    print(f"Predicted {len(result.predicted)} case(s) into {result.output_folder}.")
    if result.skipped:
        print(f"Skipped {len(result.skipped)} case(s) whose outputs already exist; --overwrite predicts them again.")
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
    embed.add_argument("--checkpoint", help="encoder checkpoint; without one the encoder is random (a warning says so)")
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
    predict.add_argument("--save-probabilities", action="store_true", help="also write <case>.npz and <case>.pkl as nnU-Net does, for ensembling")
    predict.add_argument("--overwrite", action="store_true", help="predict cases again whose outputs exist (default: skip them)")
    predict.add_argument("--replace-nonfinite", action="store_true",
                         help="accept images with NaN or Inf voxels; temporary copies with them replaced by the image minimum are predicted")
    predict.set_defaults(run=_command_predict)

    overlay = commands.add_parser("overlay", help="write PNG overlays of segmentations on their scans, for a visual check")
    overlay.add_argument("-i", "--images", required=True, help="folder of scans <case>_0000<ending> (channel 0 is shown), or one scan")
    overlay.add_argument("-s", "--segmentations", required=True, help="folder of label maps <case><ending>, or one label map")
    overlay.add_argument("-o", "--output", required=True, help="output folder for <case>_slice<N>.png files")
    overlay.add_argument("--slices", type=int, default=3, help="slices per case, where the foreground is largest (default 3)")
    overlay.set_defaults(run=_command_overlay)

    demo = commands.add_parser("demo", help="the main job on the bundled hippocampus MRI: plan, train fold 0, predict, score")
    demo.add_argument("--work-dir", type=Path, default=Path("demo_output"), help="folder for nnU-Net's data and results (default ./demo_output)")
    demo.add_argument("--checkpoint", help="encoder checkpoint; without one the tiny preset starts from random weights")
    demo.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    demo.add_argument("--iterations-per-epoch", type=int, default=50, help="training iterations per epoch (default 50)")
    demo.add_argument("--batch-size", type=int, default=8, help="slices per training iteration (default 8)")
    demo.add_argument("--input-size", type=int, default=128, help="encoder input in pixels (default 128, quick on a CPU)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    demo.set_defaults(run=_command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
