"""`kedro run` with one function slowed down and announced, so that a test can kill -9 the run
at a known point of its work (not a test module; run as a script).

    python tests/slowed_kedro.py hmsa.autolabel.labelling:write_png_atomic 0.3 run --pipelines auto_labeling

Each call of the function first prints ``FAULT-POINT <n>`` on stderr, then sleeps, then runs it.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time


def main() -> None:
    target, delay, *kedro_args = sys.argv[1:]
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    calls, lock = 0, threading.Lock()

    @functools.wraps(original)
    def slowed(*args, **kwargs):
        nonlocal calls
        with lock:  # writer threads may call it at once: one whole line each
            calls += 1
            sys.stderr.write(f"FAULT-POINT {calls}\n")
            sys.stderr.flush()
        time.sleep(float(delay))
        return original(*args, **kwargs)

    setattr(module, attr, slowed)
    from kedro.framework.cli import main as kedro_main

    sys.argv = ["kedro", *kedro_args]
    kedro_main()


if __name__ == "__main__":
    main()
