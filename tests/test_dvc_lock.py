"""main's dvc.lock and metrics files come from a `dvc repro` of main's own code and parameters.

A check in seconds, without training: DVC's own dependency hashing (`dvc status`) compares every
code and parameter dependency recorded in dvc.lock, and the metrics files kept in git, with the
tree. Outputs absent from a fresh clone (data, models: DVC's, not git's) are not its business.
"""

import json
import subprocess

import yaml

from tests.conftest import PROJECT_ROOT
from tests.helpers import run


def _outputs() -> set[str]:
    """Every path a stage of dvc.yaml writes."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    paths = set()
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                paths.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def stale_dependencies() -> list[str]:
    """What differs between dvc.lock and the tree, but for outputs git does not hold."""
    status = json.loads(run(["dvc", "status", "--json"], PROJECT_ROOT).stdout or "{}")
    outputs = _outputs()
    in_git = set(subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    stale = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # e.g. "changed command"
                stale.append(f"{stage}: {change}")
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # parameters: {key: modified | new | deleted}
                    stale += [f"{stage}: parameter {path}:{key} {how}" for key, how in state.items()]
                elif path not in outputs:  # code and configuration, not another stage's data
                    stale.append(f"{stage}: {path} {state}")
            for path, state in change.get("changed outs", {}).items():
                if path in in_git:  # the metrics files
                    stale.append(f"{stage}: {path} {state}")
    return stale


def test_dvc_lock_and_the_metrics_files_match_the_code_and_parameters():
    stale = stale_dependencies()
    assert not stale, (
        "dvc.lock (or a metrics file) does not come from this code and these parameters:\n  " + "\n  ".join(stale)
        + "\nRun `make repro` (it reruns what changed and rewrites dvc.lock and data/08_reporting/metrics/), "
        "then commit dvc.lock and the metrics files."
    )
