"""dvc.yaml reproduces the Kedro stages; experiments vary any parameter; a team shares the
outputs through a real remote server."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from omegaconf import OmegaConf

from hmsa.mlops import provenance
from hmsa.project.hooks import TAG_DVC_EXPERIMENT, TAG_GIT_COMMIT, TAG_RAW_DATA_HASH
from tests.conftest import PROJECT_ROOT
from tests.helpers import DAV_PASSWORD, DAV_USER, copy_project, free_port, run, tiny_parameters, tiny_training, \
    webdav_server

STAGES = ("data_ingestion", "teacher_training", "auto_labeling", "student_training", "evaluation")

#: a key of every parameter file DVC tracks, and a value to set it to
VARIED = {
    "conf/base/parameters_data_ingestion.yml": ("data.synthetic.seed", 5),
    "conf/base/parameters_teacher_training.yml": ("teacher.trainer.epochs", 3),
    "conf/base/parameters_auto_labeling.yml": ("auto_labeling.threshold", 0.8),
    "conf/base/parameters_student_training.yml": ("student.model.aspp_rates", [3, 6, 9]),
    "conf/base/parameters_evaluation.yml": ("evaluation.flip", [False]),
}


def _tracked_parameter_files() -> set[str]:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return {next(iter(entry)) for stage in stages.values() for entry in stage.get("params", [])}


def test_every_tracked_parameter_file_reads_without_kedro_resolvers():
    """`dvc exp run -S` rewrites a parameter file through OmegaConf, resolving it: a Kedro
    resolver (${globals:...}) there stops it. Every parameter file but the paths is tracked."""
    tracked = _tracked_parameter_files()
    assert tracked == set(VARIED)
    every = {str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "conf/base").glob("parameters_*.yml")}
    assert every - tracked == {"conf/base/parameters_paths.yml"}  # locations, built from globals: not parameters
    for path in tracked:
        text = (PROJECT_ROOT / path).read_text()
        assert "${" not in text, path
        OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / path), resolve=True)


def _git_project(path: Path) -> Path:
    project = copy_project(path)
    shutil.copytree(PROJECT_ROOT / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    run(["git", "init", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "project"], project)
    return project


def _experiments(project: Path) -> dict[str, dict]:
    """``dvc exp show --json``: name -> its data (params, metrics), queued ones included."""
    found = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found[rev.get("name") or rev["rev"]] = rev.get("data") or {}
    return found


def _param(data: dict, path: str, key: str):
    value = data["params"][path]["data"]
    for part in key.split("."):
        value = value[part]
    return value


@pytest.mark.slow
def test_an_experiment_per_parameter_file_is_queued_with_its_value_and_an_unknown_key_is_named(tmp_path):
    project = _git_project(tmp_path / "repo")
    for i, (path, (key, value)) in enumerate(VARIED.items()):
        run(["dvc", "exp", "run", "--queue", "-n", f"vary-{i}", "-S", f"{path}:{key}={json.dumps(value)}"], project)
    queued = _experiments(project)
    for i, (path, (key, value)) in enumerate(VARIED.items()):
        assert _param(queued[f"vary-{i}"], path, key) == value, (path, key)

    before = {path: (project / path).read_text() for path in VARIED}
    typo = run(["dvc", "exp", "run", "--queue", "-S", "conf/base/parameters_student_training.yml:student.trainer.epoch=3"],
               project, check=False)
    assert typo.returncode != 0
    assert "Could not override 'student.trainer.epoch'" in typo.stderr + typo.stdout
    assert {path: (project / path).read_text() for path in VARIED} == before  # nothing changed
    assert "Queued" not in run(["git", "status", "--porcelain"], project).stdout
    assert len(_experiments(project)) == len(VARIED)  # nothing queued


@pytest.mark.slow
def test_dvc_repro_experiments_and_a_team_remote(tmp_path):
    project = _git_project(tmp_path / "repo")
    tiny_parameters(project)
    tiny_training(project)
    run(["git", "commit", "-qam", "tiny"], project)

    first = run(["dvc", "repro"], project)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    assert provenance.dvc_hash(project / "data/01_raw/synthcity") in (project / "dvc.lock").read_text()

    # every MLflow run can be traced to its code, data and parameters
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment_id = client.get_experiment_by_name("hmsa").experiment_id
    runs = client.search_runs([experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(STAGES)
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    raw = provenance.dvc_hash(project / "data/01_raw/synthcity")
    for r in runs:
        assert r.data.tags[TAG_GIT_COMMIT].removesuffix("-dirty") == commit, r.info.run_name
        assert r.data.tags[TAG_RAW_DATA_HASH] == raw, r.info.run_name
        assert TAG_DVC_EXPERIMENT not in r.data.tags  # a plain `dvc repro`
        assert r.data.params, r.info.run_name
    assert next(r for r in runs if r.info.run_name == "teacher_training").data.params["teacher.trainer.epochs"] == "2"

    second = run(["dvc", "repro"], project)
    assert "Running stage" not in second.stdout and "up to date" in second.stdout

    # headline metrics: a few figures per stage, valid JSON, the evaluation's per model
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    metrics = {Path(path).stem: value["data"] for path, value in shown[""]["data"].items()}
    baselines = [f"student_{name}_training" for name in ("single", "explicit", "human")]
    assert sorted(metrics) == sorted(["data_ingestion", "teacher_training", "auto_labeling", "student_training",
                                      *baselines, "evaluation"])
    for name in baselines:  # not asked for: no figures
        assert metrics[name] in ({}, {name.removesuffix("_training"): {}}), metrics[name]
    for model in ("teacher", "student"):
        assert set(metrics["evaluation"][model]) == {"miou_1x", "miou_multiscale", "best_miou", "best_setting"}

    def leaves(value):
        return sum(leaves(v) for v in value.values()) if isinstance(value, dict) else 1

    assert leaves(metrics) <= 40, metrics  # side by side with another experiment's, on one screen
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert not plots.get("errors")
    for plot in ("evaluation_per_class.csv", "evaluation_attention.png", "teacher_training_curve.csv"):
        assert plot in json.dumps(plots)

    # the metrics files go to git, the data to DVC
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    assert "data/08_reporting/metrics/data_ingestion.json" in status
    assert "synthcity" not in status and "teacher.pt" not in status and "mlflow.db" not in status
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "a run"], project)

    _share_through_a_team_remote(project, tmp_path)
    _experiments_vary_parameters_and_reach_mlflow(project, client, experiment_id)


def _share_through_a_team_remote(project: Path, tmp_path: Path) -> None:
    """Push to a real WebDAV server on loopback; a fresh clone pulls every output and predicts
    with the pulled student, without training."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    # no team remote yet: DVC stops at once naming the page that says how to set it, not with a
    # missing-cache error; the check says it in words
    unset = run(["dvc", "pull"], clone, check=False)
    assert unset.returncode != 0 and "docs/team-remote.md" in unset.stderr and "issing cache" not in unset.stderr
    unset = run(["python", "-m", "hmsa.mlops.remote"], clone, check=False)
    assert unset.returncode == 2 and "DVC remote 'team' is not set up in this clone" in unset.stderr
    assert "dvc remote modify --local team url <url>" in unset.stderr
    assert (clone / "docs/team-remote.md").read_bytes() == (PROJECT_ROOT / "docs/team-remote.md").read_bytes()

    with webdav_server(tmp_path / "dav") as url:
        for repo in (project, clone):
            run(["dvc", "remote", "modify", "--local", "team", "url", url], repo)
            run(["dvc", "remote", "modify", "--local", "team", "user", DAV_USER], repo)
            run(["dvc", "remote", "modify", "--local", "team", "password", DAV_PASSWORD], repo)
        assert "DVC remote ok" in run(["python", "-m", "hmsa.mlops.remote"], project).stdout
        run(["dvc", "push"], project)
        assert len(list((tmp_path / "dav" / "hmsa").rglob("*"))) > 20
        assert DAV_PASSWORD not in (project / ".dvc" / "config").read_text()  # credentials stay local

        run(["dvc", "pull"], clone)
    for out in ("data/03_primary/image_manifest.parquet", "data/06_models/student.pt",
                "data/08_reporting/evaluation_results.csv", "data/04_feature/auto_label_manifest.parquet"):
        assert (clone / out).read_bytes() == (project / out).read_bytes()
    assert provenance.dvc_hash(clone / "data/01_raw/synthcity") == provenance.dvc_hash(project / "data/01_raw/synthcity")
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout
    assert "Running stage" not in run(["dvc", "repro"], clone).stdout  # restored, not retrained
    image = sorted((clone / "data/01_raw/synthcity/leftImg8bit/val").rglob("*.png"))[0]
    run(["hmsa", "predict", str(image), "--model", "data/06_models/student.pt", "--out", "predictions",
         "--no-progress"], clone)
    assert (clone / "predictions" / f"{image.stem}_labelIds.png").is_file()

    # the server gone: the check names the remote and what to do; nothing is lost
    run(["dvc", "remote", "modify", "--local", "team", "url", f"webdav://127.0.0.1:{free_port()}/hmsa"], clone)
    down = run(["python", "-m", "hmsa.mlops.remote"], clone, check=False)
    assert down.returncode == 2 and "DVC remote 'team' (webdav://127.0.0.1:" in down.stderr
    assert "cannot be used" in down.stderr and "dvc remote modify --local team url" in down.stderr
    push = run(["dvc", "push"], clone, check=False)
    assert push.returncode != 0
    assert (clone / "data/06_models/student.pt").read_bytes() == (project / "data/06_models/student.pt").read_bytes()
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout


def _experiments_vary_parameters_and_reach_mlflow(project: Path, client: mlflow.MlflowClient, experiment_id: str):
    """`dvc exp run -S` in the workspace and from the queue (a copy of the project): the
    parameter reaches the run, DVC shows it beside the headline metrics, and MLflow has the
    experiment's runs, tagged with its name."""
    student = "conf/base/parameters_student_training.yml"
    run(["dvc", "exp", "run", "--queue", "-n", "seed-one", "-S", f"{student}:student.trainer.seed=1"], project)
    queued = run(["dvc", "exp", "run", "--run-all"], project)  # runs in a temporary copy
    assert "Running stage 'student_training'" in queued.stdout and "Running stage 'teacher_training'" not in queued.stdout
    assert "failed to reproduce" not in queued.stdout + queued.stderr  # (DVC exits 0 when a queued one fails)
    ran = run(["dvc", "exp", "run", "-n", "one-epoch", "-S", f"{student}:student.trainer.epochs=1"], project)
    assert "Running stage 'student_training'" in ran.stdout and "Running stage 'evaluation'" in ran.stdout
    assert "Running stage 'teacher_training'" not in ran.stdout  # DVC reruns only what the parameter feeds

    found = _experiments(project)
    assert _param(found["one-epoch"], student, "student.trainer.epochs") == 1
    assert _param(found["seed-one"], student, "student.trainer.seed") == 1
    trained = found["one-epoch"]["metrics"]["data/08_reporting/metrics/student_training.json"]["data"]
    assert trained["student"]["epochs"] == 1  # the run used the value
    for name in ("one-epoch", "seed-one"):
        headline = found[name]["metrics"]["data/08_reporting/metrics/evaluation.json"]["data"]
        assert 0 <= headline["student"]["miou_multiscale"] <= 1
        runs = client.search_runs([experiment_id], filter_string=f"tags.{TAG_DVC_EXPERIMENT} = '{name}'")
        assert sorted(r.info.run_name for r in runs) == [f"evaluation [{name}]", f"student_training [{name}]"], name
    assert found["seed-one"]["metrics"] != found["one-epoch"]["metrics"]

    # compare on one screen: what differs between the experiments, each name once (no file prefix)
    header = run(["dvc", "exp", "show", "--only-changed", "--csv"], project).stdout.splitlines()[0].split(",")
    assert {"student.trainer.epochs", "student.trainer.seed", "student.epochs"} <= set(header)
    assert "teacher.trainer.lr" not in header and "teacher.epochs" not in header  # unchanged: left out
    assert len(header) <= 20, header
    every = run(["dvc", "exp", "show", "--csv"], project).stdout.splitlines()[0].split(",")
    assert {"student.miou_1x", "student.miou_multiscale", "teacher.val_miou", "best.setting"} <= set(every)
    assert not [column for column in every if ":" in column], every  # unique names: no file:key headers
    diff = json.loads(run(["dvc", "plots", "diff", "seed-one", "one-epoch", "--json"], project).stdout)
    assert not diff.get("errors")
    for plot in ("student_training_curve.csv", "teacher_training_curve.csv", "evaluation_per_class.csv"):
        (vega,) = diff["data"][f"data/08_reporting/{plot}"]
        assert {point["rev"] for point in vega["content"]["data"]["values"]} == {"seed-one", "one-epoch"}, plot
    curve = [p for p in diff["data"]["data/08_reporting/student_training_curve.csv"][0]["content"]["data"]["values"]]
    assert sorted(p["epoch"] for p in curve if p["rev"] == "one-epoch") == ["1"]  # each experiment's own curve


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value


def _changed(value):
    """Another value of the same type (a bool flipped, a number moved, a list or string kept)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    return value


def test_every_key_set_as_dvc_exp_run_sets_it_reaches_kedro(tmp_path):
    """Every leaf of every tracked parameter file, rewritten by DVC's own `-S` code
    (hydra overrides), is the value Kedro hands the nodes."""
    from dvc.utils.hydra import apply_overrides

    from hmsa.project.config import project_conf

    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf")
    expected = {}
    for path in sorted(_tracked_parameter_files()):
        leaves = dict(_leaves(yaml.safe_load((PROJECT_ROOT / path).read_text())))
        overrides = [f"{key}={json.dumps(_changed(value))}" for key, value in leaves.items()]
        apply_overrides(tmp_path / path, overrides)
        expected |= {key: _changed(value) for key, value in leaves.items()}
    assert len(expected) > 100
    params = project_conf("parameters", tmp_path, "base")
    got = dict(_leaves({k: v for k, v in params.items() if k != "paths"}))
    assert got == expected
