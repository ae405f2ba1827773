"""Writing folders so that readers see either the old content or the new, never a mix."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def replace_folder(root: str | Path, fill: Callable[[Path], T]) -> T:
    """Call ``fill(tmp)`` to write a new folder beside ``root``, then swap it in for ``root``.

    An interruption or an error inside ``fill`` leaves the previous ``root`` untouched; the
    old folder is removed only once the new one is in place.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = root.parent / f".{root.name}.tmp-{tag}", root.parent / f".{root.name}.old-{tag}"
    try:
        tmp.mkdir()
        result = fill(tmp)
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
