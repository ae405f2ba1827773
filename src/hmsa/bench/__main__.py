"""Run the benchmarks and merge their figures into a JSON file (``make bench``)."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from hmsa.io.files import atomic_path
from hmsa.bench import autolabel, data, evaluation, models, training
from hmsa.runtime.jobs import default_workers

SUITES = {"autolabel": autolabel.run, "data": data.run, "evaluation": evaluation.run, "models": models.run,
          "training": training.run}


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the chosen suites, write and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m hmsa.bench", description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), action="append", help="default: all")
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/benchmarks.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmarks run")
    args = parser.parse_args(argv)

    workers = default_workers()
    figures: dict[str, dict] = {}
    for name in args.suite or sorted(SUITES):
        figures.update(SUITES[name](workers=workers, quick=args.quick))

    existing = json.loads(args.out.read_text()) if args.out.is_file() else {}
    existing.update(figures)
    existing["_machine"] = {"cpus": workers, "platform": platform.platform(), "python": platform.python_version()}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")

    width = max(len(k) for k in figures)
    print(f"{'benchmark':<{width}}  {'value':>10}  unit       conditions")
    for key, fig in figures.items():
        print(f"{key:<{width}}  {fig['value']:>10}  {fig['unit']:<9}  {fig['conditions']}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
