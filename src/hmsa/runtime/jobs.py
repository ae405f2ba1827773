"""Process pools: how many cores this process may use, and a map over them."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor


def run_jobs(fn, jobs: list, workers: int = 1) -> list:
    """``[fn(job) for job in jobs]``, in ``workers`` processes when there is more than one."""
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    return [fn(job) for job in jobs]


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
