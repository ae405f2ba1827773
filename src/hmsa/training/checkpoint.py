"""Checkpoints: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hmsa.io.files import atomic_path


class CheckpointError(ValueError):
    """A file that should hold a checkpoint cannot be read as one."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain Python only).

    Anything else (a truncated file, a pickle with code in it, not a checkpoint at all) is a
    :class:`CheckpointError` naming the file; no code is ever unpickled.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        hint = ("it holds pickled Python objects beyond tensors and plain data, which are never loaded"
                if "weights_only" in str(err).lower() or "Weights only" in str(err)
                else "it is truncated, damaged or not a PyTorch file")
        raise CheckpointError(f"{path}: cannot be loaded as a checkpoint ({first}); {hint}. "
                              "Delete it to retrain, or give the right file.") from None
