"""Where a result came from: the git commit of the code and the DVC hash of the data."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def git_commit(path: Path | str = ".") -> str | None:
    """The commit checked out at ``path`` (with ``-dirty`` when tracked files changed), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def dvc_hash(path: Path | str) -> str:
    """The md5 DVC records for ``path`` in dvc.lock / .dvc files (``<md5>.dir`` for a folder).

    Computed with DVC's own hashing code, so a run can be matched to ``dvc.lock`` exactly.
    """
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as staging:
        _, _, obj = build(HashFileDB(fs, staging), str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


class RawDataChangedError(RuntimeError):
    """The raw tree is not the one ingestion recorded; the message says what to run."""


def check_raw_data(info: dict) -> None:
    """Stop when the raw tree ``info`` (ingestion's ``raw_data_info``) describes has changed
    since ingestion hashed it: a stage would read files its manifest, class counts and
    centroids do not describe, and its MLflow run would carry the old hash. Nothing to check
    when ingestion did not hash (``data.hash_raw_data: false``)."""
    recorded = info.get("dvc_md5")
    if not recorded:
        return
    now = dvc_hash(info["root"])
    if now != recorded:
        raise RawDataChangedError(
            f"The raw data at {info['root']} changed after data_ingestion recorded it (DVC hash {recorded}, now "
            f"{now}): the manifest, class counts and centroids describe other files. Run data_ingestion again "
            "(kedro run --pipelines data_ingestion, or the whole chain with kedro run), or restore the files "
            "(dvc checkout)."
        )
