"""nnU-Net's environment: its three data folders and where it finds our trainers and planner."""

from __future__ import annotations

import os
from pathlib import Path

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def plugin_dir(name: str) -> Path:
    """Return the folder of our nnU-Net plug-ins, `trainers` or `planners`.

    NOTE: the plug-ins live beside the package in the source tree, so this needs an editable install
    (`pip install -e .`) or a source checkout on the path. A wheel install does not ship them.
    """
    folder = REPOSITORY_ROOT / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The nnU-Net plug-in folder {folder} is missing. Install mricore_nnunet from a source "
            f"checkout with 'pip install -e .' so that nnU-Net can find its trainers and planner."
        )
    return folder


def trainer_search_path() -> str:
    """Return `nnUNet_extTrainer` with our trainer folder added (once) to what is already set."""
    ours = str(plugin_dir("trainers"))
    existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    return os.pathsep.join(existing if ours in existing else existing + [ours])


def configure_trainer_search_path() -> str:
    """Set `nnUNet_extTrainer` for this process, leaving nnU-Net's folder variables alone, and return it.

    Prediction from a model folder needs no data folders, only the trainer classes.
    """
    value = trainer_search_path()
    os.environ["nnUNet_extTrainer"] = value
    return value


def configure_environment(base: str | os.PathLike | None = None) -> dict[str, str]:
    """Set nnU-Net's variables for this process and return them.

    Folders already set are kept. With `base`, unset ones become `base/nnUNet_raw` and so on. Without
    it, an unset one raises an error that names the line to add.
    """
    values = {}
    for name in NNUNET_PATH_VARIABLES:
        value = os.environ.get(name)
        if value is None:
            if base is None:
                raise RuntimeError(
                    f"The environment variable {name} is not set. nnU-Net needs its three folders; "
                    f"run 'mricore_nnunet env' to print the lines to add to your shell."
                )
            value = str(Path(base) / name)
            Path(value).mkdir(parents=True, exist_ok=True)
        values[name] = value
    values["nnUNet_extTrainer"] = trainer_search_path()
    os.environ.update(values)
    return values


def environment_lines(base: str | os.PathLike | None = None) -> list[str]:
    """Return `export` lines for nnU-Net's folders and our trainers, for a user's shell profile."""
    base = Path(base or Path.home() / "nnUNet_data")
    lines = []
    for name in NNUNET_PATH_VARIABLES:
        lines.append(f'export {name}="{os.environ.get(name, str(base / name))}"')
    lines.append(f'export nnUNet_extTrainer="{trainer_search_path()}"')
    return lines
