"""Helpers for the end-to-end tests: a copy of the project with tiny settings, and a runner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT, TINY_SPEC
from tests.models.conftest import TINY


def copy_project(dest: Path) -> Path:
    """The project's configuration and pipeline files, without data, runs or venv."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "dvc.yaml", ".dvcignore", ".gitignore", ".telemetry", "docs/team-remote.md"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, dest / name)
    shutil.copytree(PROJECT_ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copytree(PROJECT_ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / "conf" / "local").mkdir()
    (dest / "conf" / "local" / ".gitkeep").touch()  # in git, as the project's: DVC's copies of it need one
    for layer in ("01_raw", "03_primary", "08_reporting/metrics"):
        (dest / "data" / layer).mkdir(parents=True)
    return dest


def tiny_parameters(dest: Path) -> None:
    """Shrink SynthCity in the copy's conf/base, where both kedro and dvc read it."""
    path = dest / "conf" / "base" / "parameters_data_ingestion.yml"
    params = yaml.safe_load(path.read_text())
    params["data"]["synthetic"] = json.loads(TINY_SPEC.model_dump_json())
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _env(cwd: Path) -> dict[str, str]:
    """The venv first on PATH, the copy's own src importable, no telemetry, a git identity, and
    no MLflow store inherited from this process (a test that wants one passes it)."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {**inherited, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(Path(cwd) / "src"),
            "KEDRO_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "hmsa test", "GIT_AUTHOR_EMAIL": "test@hmsa.invalid",
            "GIT_COMMITTER_NAME": "hmsa test", "GIT_COMMITTER_EMAIL": "test@hmsa.invalid"}


def run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` (``env`` added to the environment); with ``check``, fail the
    test (with the output) unless it succeeds."""
    proc = subprocess.run(cmd, cwd=cwd, env={**_env(cwd), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def kill_at(kedro_args: list[str], cwd: Path, slowed: str, point: int, delay: float = 0.3,
            timeout: float = 300) -> str:
    """Start ``kedro <kedro_args>`` with the function ``slowed`` ("module:name") slowed down,
    and ``kill -9`` it (its whole process group) when that function is called the
    ``point``-th time. Returns what the run printed on stderr until then."""
    cmd = [sys.executable, str(Path(__file__).with_name("slowed_kedro.py")), slowed, str(delay), *kedro_args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.rstrip().endswith(f"FAULT-POINT {point}"):  # progress bars may share the line
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, f"{slowed} was not called {point} times in {timeout} s"
        else:
            raise AssertionError(f"the run ended before calling {slowed} {point} times:\n{''.join(seen)[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return "".join(seen)


def tiny_training(project, **trainer):
    """Shrink model and training (and auto-labelling batches) in the copy's conf/base."""
    path = project / "conf" / "base" / "parameters_auto_labeling.yml"
    params = yaml.safe_load(path.read_text())
    params["auto_labeling"].update({"batch_size": 2, "readers": 0, "progress_bar": False})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    _tiny_roles(project, **trainer)


def _tiny_roles(project, **trainer):
    """Shrink model and training in the copy's conf/base."""
    for role in ("teacher", "student"):
        path = project / "conf" / "base" / f"parameters_{role}_training.yml"
        params = yaml.safe_load(path.read_text())
        params[role]["model"].update({k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()})
        # the whole 32 x 64 image: 32 x 32 crops leave 1 x 1 feature maps at the 0.5 scale, whose
        # batch statistics blow the BatchNorm running variances up (NaN logits in eval mode)
        params[role]["trainer"].update({"epochs": 2, "batch_size": 2, "crop": [32, 64], "num_workers": 0,
                                        "progress_bar": False, **trainer.get(role, {})})
        path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_project(dest: Path, pipelines: str | None = None) -> Path:
    """A copy of the project with tiny data and models; ``pipelines`` already run in it."""
    project = copy_project(dest)
    tiny_parameters(project)
    tiny_training(project)
    if pipelines:
        run(["kedro", "run", "--pipelines", pipelines], project)
    return project


#: SynthCity trainIds -> Mapillary v1.2 label ids, for tiny Mapillary trees (others: 65, unlabeled)
_TO_MAPILLARY = {"road": 13, "sidewalk": 15, "building": 17, "vegetation": 30, "sky": 27, "car": 55, "person": 19,
                 "pole": 45, "traffic sign": 50}


def mapillary_tree(root: Path, counts: dict[str, int], size: tuple[int, int] = (96, 160), layout: str = "v1.2",
                   seed: int = 0) -> Path:
    """A Mapillary Vistas tree (training/, validation/): jpg images named by random keys and
    palette label PNGs with Mapillary ids, drawn from SynthCity scenes of ``size`` (h, w)."""
    import numpy as np
    from PIL import Image

    from hmsa.data.labels import CITYSCAPES, MAPILLARY, MAPILLARY_UNLABELED
    from hmsa.data.synthetic import render_scene

    lut = np.full(256, MAPILLARY_UNLABELED, np.uint8)
    for name, mapillary_id in _TO_MAPILLARY.items():
        lut[CITYSCAPES.class_names.index(name)] = mapillary_id
    palette = np.zeros((256, 3), np.uint8)
    palette[: MAPILLARY.num_classes] = MAPILLARY.class_colors
    rng = np.random.default_rng(seed)
    for folder, n in counts.items():
        images = root / folder / "images"
        labels = root / folder / ("v1.2/labels" if layout == "v1.2" else "labels")
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for _ in range(n):
            key = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz_-ABCXYZ0123456789"), 22))
            scene = render_scene(rng, *size)
            Image.fromarray(scene.image).save(images / f"{key}.jpg", quality=95)
            label = Image.fromarray(lut[CITYSCAPES.train_ids(scene.fine)], mode="L").convert("P")
            label.putpalette(palette.ravel().tolist())
            label.save(labels / f"{key}.png")
    return root


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(cmd: list[str], url: str, cwd: Path, log: Path, timeout: float = 120, env: dict[str, str] | None = None):
    """Start ``cmd`` (a server of the venv; ``env`` added to the environment) and wait until
    ``url`` answers; stop it, and whatever it started, at the end."""
    import requests

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**_env(cwd), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{cmd[0]} stopped:\n{log.read_text()[-3000:]}"
            try:
                requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


#: the WebDAV server's account (a test server on loopback; a team's own comes from its admin)
DAV_USER, DAV_PASSWORD = "hmsa-ci", "not-a-secret"


@contextmanager
def webdav_server(root: Path):
    """A real WebDAV server (wsgidav) on loopback that shares ``root``, with basic authentication,
    as a team's DVC remote. Yields the DVC url of its folder ``hmsa/``."""
    port = free_port()
    (root / "hmsa").mkdir(parents=True, exist_ok=True)
    config = root.parent / f"wsgidav-{port}.yaml"
    config.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": port, "provider_mapping": {"/": str(root)}, "verbose": 1,
        "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                               "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": {DAV_USER: {"password": DAV_PASSWORD}}}},
    }))
    cmd = [str(Path(sys.executable).parent / "wsgidav"), "--config", str(config)]
    with server(cmd, f"http://127.0.0.1:{port}/", root.parent, root.parent / f"wsgidav-{port}.log"):
        yield f"webdav://127.0.0.1:{port}/hmsa"


@contextmanager
def mlflow_server(folder: Path):
    """A real ``mlflow server`` on loopback: a sqlite backend, the registry, and artifacts
    proxied through the server (``mlflow-artifacts:``), as a team runs it. Yields its URI."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    uri = f"http://127.0.0.1:{port}"
    with server(cmd, f"{uri}/health", folder, folder / "server.log"):
        yield uri


def tiny_logged_model(tmp_path: Path, monkeypatch, name: str = "hmsa-test", limits: dict | None = None) -> dict:
    """A TINY HMSA model, logged and registered (``log_and_register``) in a store of its own
    under ``tmp_path``, which this process and its children then use. Returns the registry info."""
    import mlflow
    import torch

    from hmsa.models import ModelConfig, build_model
    from hmsa.mlops.tracking import log_and_register

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(variable, store)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hmsa", **TINY)).eval()
    bundle = {"model_config": model.cfg.model_dump(), "state_dict": model.state_dict()}
    experiment = mlflow.MlflowClient().create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        return log_and_register(bundle, name, [], limits)
