"""The trained models' Kedro namespaces, which the training, auto-labelling and evaluation
pipelines share: ``<namespace>.model``, ``<namespace>.registry`` and so on."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from hmsa.training.config import VARIANTS

#: each trained model's namespace: its parameter block, and the baseline of that block it is
#: (the paper's baselines, trained when listed in ``<block>.variants``), or None
MODELS: dict[str, tuple[str, str | None]] = {
    "teacher": ("teacher", None),
    "student": ("student", None),
    **{f"student_{name}": ("student", name) for name in VARIANTS},
}


@contextmanager
def reading_namespaces():
    """Builds nodes that read another namespace's outputs (``teacher.model``): what namespaces
    are for, though Kedro warns of any dotted name used outside its own namespace."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        yield
