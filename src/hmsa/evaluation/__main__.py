"""Print the evaluation's mIoU table: ``python -m hmsa.evaluation [results.csv]`` (``make run`` ends with it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

DEFAULT = Path("data/08_reporting/evaluation_results.csv")


def summary_table(results: pd.DataFrame) -> str:
    """mIoU in points: one row per model, fusion and flip, one column per scale set."""
    table = results.assign(miou=results["miou"] * 100, flip=results["flip"].map({True: "flip", False: ""}))
    pivot = table.pivot_table(index=["model", "fusion", "flip"], columns="scales", values="miou", sort=False)
    order = sorted(pivot.columns, key=lambda s: (len(s.split("-")), s))
    return pivot[order].to_string(float_format=lambda v: f"{v:.1f}", na_rep="-")


def main(argv: list[str] | None = None) -> int:
    """Print the table of the results CSV given (default: the pipeline's)."""
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT
    if not path.is_file():
        print(f"no evaluation results at {path}: run `kedro run` (or `kedro run --pipelines evaluation`) first",
              file=sys.stderr)
        return 1
    results = pd.read_csv(path)
    best = results.loc[results["miou"].idxmax()]
    print(f"val mIoU (points) by model, fusion and scale set ({path}):")
    print(summary_table(results))
    print(f"best: {best['model']} {best['setting']} {100 * best['miou']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
