"""Writing files and folders so that readers see either the old content or the new, never a
mix or a half-written file; a full disk is an error that names the file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def is_stamped(root: str | Path, stamp_file: str, stamp: dict) -> bool:
    """True when ``root`` holds a complete folder built from ``stamp`` (its stamp file says so)."""
    try:
        return json.loads((Path(root) / stamp_file).read_text()) == stamp
    except (OSError, ValueError):
        return False


def rebuild_stamped(root: str | Path, stamp_file: str, stamp: dict, fill: Callable[[Path], T],
                    what: str, setting: str) -> tuple[bool, T | None]:
    """Build the folder ``root`` with ``fill(tmp)`` unless it already holds a build of ``stamp``;
    returns (built, what ``fill`` returned).

    The stamp is written last, inside the new folder, and the folder is swapped in whole
    (``replace_folder``): an interrupted build leaves no stamp, so the next run builds again.
    A folder without the stamp file is not ours (``what``, e.g. "a SynthCity tree"): it is
    refused, naming the parameter ``setting`` that points at it.
    """
    root = Path(root)
    if is_stamped(root, stamp_file, stamp):
        return False, None
    if root.exists() and not (root / stamp_file).is_file():
        raise FileExistsError(f"{root} exists but is not {what} (no {stamp_file}); refusing to replace it. "
                              f"Point {setting} at another folder, or remove this one.")

    def filled(tmp: Path) -> T:
        result = fill(tmp)
        (tmp / stamp_file).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        return result

    return True, replace_folder(root, filled)


def temp_name(name: str) -> str:
    """A hidden, unique name to write ``name`` under before the rename: ``.<name>.<hex>.tmp``.

    Writers must give the format explicitly (the suffix is ``.tmp``), and a folder listing
    by suffix (``*.png``) never sees a file that a kill left half-written.
    """
    return f".{name}.{uuid.uuid4().hex[:8]}.tmp"


def remove_stale_temps(folder: str | Path) -> int:
    """Delete the temporary files that killed writers left under ``folder``; how many."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()] if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


class DiskFullError(OSError):
    """No space left while writing a file; the previous file is kept."""


def disk_full(err: OSError, path: str | Path) -> OSError:
    """``err`` as a :class:`DiskFullError` naming ``path`` when it is ENOSPC, else ``err``."""
    if err.errno != errno.ENOSPC or isinstance(err, DiskFullError):
        return err
    return DiskFullError(errno.ENOSPC, f"no space left on the device while writing {path}: free some space (or "
                         "point globals.yml data_dir at a larger disk) and run again. The previous "
                         f"{Path(path).name}, if any, is unchanged", str(path))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; rename it over ``path`` on success.

    An exception (a failing writer, a full disk) or a kill leaves the previous ``path``
    untouched; the temporary file is removed (after a kill, :func:`remove_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise disk_full(err, path) from err
    finally:
        tmp.unlink(missing_ok=True)


class OutsideRootError(ValueError):
    """A path read from a manifest points outside the data root it must stay in."""


def under(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, resolved; refuses a path that leaves ``root`` (``..``, absolute
    paths, symlinks out), so that a manifest cannot make the workflow read or write elsewhere."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise OutsideRootError(f"manifest path {relative!r} leads to {path}, outside its data root {base}; "
                               "rebuild the manifest (rerun the pipeline that wrote it)")
    return path
