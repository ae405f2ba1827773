"""One `kedro run` at a time per project; none while `dvc repro` rebuilds the outputs."""

import fcntl
import json
import os
import subprocess
import sys

import pytest

from hmsa.project.hooks import RUN_LOCK
from tests.helpers import run, tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tiny_project(tmp_path_factory.mktemp("lock") / "project")


def _files(project):
    return sorted(str(p.relative_to(project)) for p in (project / "data").rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_second_run_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken(project):
    before = _files(project)
    # a run in progress: this process holds the lock, as a running `kedro run` does
    with open(project / RUN_LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": os.getpid(), "host": "here", "started": "2026-01-01 10:00:00",
                               "command": "kedro run --pipelines teacher_training"}))
        held.flush()
        second = run(["kedro", "run", "--pipelines", "data_ingestion"], project, check=False)
        said = " ".join((second.stdout + second.stderr).split())
        assert second.returncode != 0
        assert (f"Another kedro run is running in this project: PID {os.getpid()} on here, started 2026-01-01 "
                "10:00:00: kedro run --pipelines teacher_training") in said
        assert f"kill {os.getpid()}" in said
        assert _files(project) == before  # refused before anything was written
    # the holder is gone (as after a kill -9: the OS drops the lock, its note stays): the next run takes it
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (project / RUN_LOCK).write_text(json.dumps({"pid": gone.pid, "command": "kedro run"}))
    run(["kedro", "run", "--pipelines", "data_ingestion"], project)
    assert json.loads((project / RUN_LOCK).read_text())["command"].endswith("run --pipelines data_ingestion")


@pytest.mark.slow
def test_a_run_during_dvc_repro_is_refused_but_dvcs_own_stages_run(project):
    """DVC's own lock table names the process writing outputs; a stage DVC runs ($DVC_STAGE) goes on."""
    table = project / ".dvc" / "tmp" / "rwlock"
    table.parent.mkdir(parents=True, exist_ok=True)
    writing = str(project / "data/06_models/teacher.pt")
    table.write_text(json.dumps({"read": {}, "write": {writing: {"pid": os.getpid(), "cmd": "dvc repro"}}}))
    try:
        refused = run(["kedro", "run", "--pipelines", "data_ingestion"], project, check=False)
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode != 0
        assert f"DVC is running in this project: PID {os.getpid()} (dvc repro) is writing {writing}" in said
        assert "make repro" in said
        run(["kedro", "run", "--pipelines", "data_ingestion"], project, env={"DVC_STAGE": "data_ingestion"})
    finally:
        table.unlink()
