"""Print the evaluation's mIoU table: ``python -m hmsa.commands.results [--env ENV] [results.csv]``
(``make run`` ends with it). Without a file, the catalog's ``evaluation_results`` of the
environment is read, wherever its ``data_dir`` puts it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hmsa.evaluation.report import summary_table


def results_path(env: str | None = None, project: Path | str = ".") -> Path:
    """Where the catalog of ``env`` (conf/base, then conf/<env>) stores the results table."""
    from hmsa.project.config import project_conf

    entry = project_conf("catalog", project, env)["evaluation_results"]
    return Path(project) / entry.get("dataset", entry)["filepath"]


def main(argv: list[str] | None = None) -> int:
    """Print the table of the results CSV given (default: the catalog's)."""
    parser = argparse.ArgumentParser(prog="python -m hmsa.commands.results", description=__doc__)
    parser.add_argument("results", nargs="?", help="a results CSV (default: the catalog's evaluation_results)")
    parser.add_argument("--env", default=None, help="the Kedro environment whose catalog to read (default: local)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(args.results) if args.results else results_path(args.env)
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
