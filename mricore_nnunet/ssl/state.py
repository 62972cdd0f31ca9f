"""The resumable training state `last.pt`, written atomically.

It contains the student, the teacher (with heads and mask token), the optimizer, the loss centres,
the iteration, the schedule settings, the data manifest hash and the Python, numpy and torch
random states. Data order and augmentation are functions of (seed, iteration), so these entries
are all a restart needs to continue exactly where the file was written.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_torch_save

logger = logging.getLogger(__name__)

STATE_NAME = "last.pt"
STATE_FORMAT = "mricore_nnunet.pretrain_state"
STATE_VERSION = 1


def random_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(path: Path, payload: dict[str, Any]) -> None:
    """Write the state to a temporary file in the same folder and rename it over `path`."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **payload, "random_states": random_states()}
    atomic_torch_save(payload, path)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a state written by `save_training_state`; raise ValueError if it is another kind of file."""
    # weights_only=False because the random states are Python objects; this reads only files
    # that save_training_state wrote into the run's own output folder.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a pre-training state written by mricore_nnunet. Move it away or use another --out.")
    if payload.get("version") != STATE_VERSION:
        raise ValueError(
            f"{path} is a pre-training state of version {payload.get('version')!r}, but this mricore_nnunet "
            f"reads version {STATE_VERSION}. Resume with the release that wrote it, or use another --out."
        )
    return payload
