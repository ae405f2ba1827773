"""MLflow: per-epoch metrics from any process, and logging + registering trained models."""

from __future__ import annotations

import math
import os
import re
import socket
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

from hmsa.training import checkpoint

#: alias set on the newest registered version (MLflow reserves "latest")
NEWEST_ALIAS = "newest"
#: tag on a run that resumed training from a checkpoint another (killed) run wrote
RESUMED_FROM_TAG = "hmsa.{role}.resumed_from_run"
#: tag on the killed run: the run that took its training over
RESUMED_BY_TAG = "hmsa.{role}.resumed_by_run"


class StoreError(RuntimeError):
    """The MLflow tracking store cannot be read or written; the message says what to do."""


def without_credentials(uri: str) -> str:
    """``uri`` with any ``user:password@`` removed, for messages and logs."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", uri)


#: the embedded store, when neither mlflow.yml nor $MLFLOW_TRACKING_URI names another
EMBEDDED_STORE = "sqlite:///mlflow.db"


def project_root(start: Path | str | None = None) -> Path | None:
    """The Kedro project that holds ``start`` (the current folder by default), or None."""
    from kedro.utils import find_kedro_project

    return find_kedro_project(Path(start or Path.cwd()).resolve())


def tracking_uri(project: Path | str | None = None, env: str | None = None, key: str = "mlflow_tracking_uri") -> str:
    """The tracking URI, read as ``kedro run --env env`` reads it: ``server.mlflow_tracking_uri``
    of the project's mlflow.yml, which defaults to ``$MLFLOW_TRACKING_URI`` and then to the
    embedded ``sqlite:///mlflow.db``. A relative store is made absolute against the project, so
    that every command finds the same one from any folder. Outside a Kedro project:
    ``$MLFLOW_TRACKING_URI``, else MLflow's default. ``key="mlflow_registry_uri"``: the
    registry's, the tracking store's unless mlflow.yml names another.

    ``hmsa predict``, the notebook and ``kedro mlflow ui`` read it this way, as kedro-mlflow does.
    """
    from hmsa.project.config import project_conf

    root = project_root(project)
    if root is None:
        return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    server = project_conf("mlflow", root, env).get("server") or {}
    uri = server.get(key) or server.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED_STORE
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and not Path(unquote(parsed.path[1:])).is_absolute():
        return f"sqlite:///{root / unquote(parsed.path[1:])}"
    if parsed.scheme == "" and not Path(uri).is_absolute():
        return (root / uri).as_uri()
    return uri


def use_project_store(project: Path | str | None = None, env: str | None = None) -> str:
    """Point this process's MLflow at the project's tracking store and registry (as
    ``tracking_uri`` reads them); returns the tracking URI."""
    uri = tracking_uri(project, env)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(tracking_uri(project, env, "mlflow_registry_uri"))
    return uri


def parent_store(uri: str, project_path: Path | str, parent: Path | str, experiment: str) -> str | None:
    """The store a run should log to when DVC runs it in a copy of the project at
    ``project_path`` (a queued or ``--temp`` ``dvc exp run``; ``parent`` is the repository it
    came from): a relative embedded store would be deleted with the copy, so the parent's
    instead, with ``experiment`` keeping its artifacts beside it. None when nothing moves
    (the project itself, or a store that is not a relative sqlite file)."""
    parsed = urlparse(uri)
    relative = unquote(parsed.path[1:])
    if parsed.scheme != "sqlite" or Path(relative).is_absolute():
        return None
    parent = Path(parent).resolve()
    if parent == Path(project_path).resolve():
        return None
    moved = f"sqlite:///{parent / relative}"
    client = MlflowClient(moved)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=(parent / "mlruns").as_uri())
    return moved


def champion_uri(project: Path | str | None = None, env: str | None = None) -> str:
    """``models:/<the student's registered name>@<champion alias>`` of the project's
    environment ``env`` (each environment registers its models under its own names)."""
    from hmsa.project.config import project_conf

    root = project_root(project)
    params = project_conf("parameters", root, env) if root else {}
    name = (params.get("student") or {}).get("registered_model_name") or "hmsa-student"
    alias = (params.get("evaluation") or {}).get("champion_alias") or "champion"
    return f"models:/{name}@{alias}"


def _check_server(uri: str) -> None:
    """A tracking server that does not answer would make MLflow retry for minutes: ask its
    health endpoint once, with a short timeout, and say what to do."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=10)
    except requests.RequestException as err:
        raise StoreError(
            f"The MLflow tracking server {without_credentials(uri)} does not answer "
            f"({type(err).__name__}: {without_credentials(str(err))[:300]}). Start it (mlflow server ...), or point "
            "MLFLOW_TRACKING_URI or server.mlflow_tracking_uri in conf/<env>/mlflow.yml at one that runs "
            f"(unset MLFLOW_TRACKING_URI for the project's embedded store, {EMBEDDED_STORE})."
        ) from None


def check_store(uri: str, project_path: Path | str = ".") -> None:
    """Fail early, with what to do, when the MLflow store at ``uri`` is unusable.

    Checks ``sqlite:///`` files (a real, readable SQLite database in a writable folder), local
    folder stores, and that an http(s) tracking server answers; others (databricks, ...) are
    left to MLflow.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        _check_server(uri)
        return
    if parsed.scheme == "sqlite":
        path = Path(unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path))
    elif parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path))
    else:
        return
    if not path.is_absolute():
        path = Path(project_path) / path
    shown = without_credentials(uri)
    folder = path if parsed.scheme != "sqlite" else path.parent
    if parsed.scheme == "sqlite" and path.exists():
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as err:
            raise StoreError(
                f"The MLflow store {path} ({shown}) cannot be read: {err}. Move it aside "
                f"(mv {path.name} {path.name}.broken) to start a new store, restore it from a backup, or set "
                "server.mlflow_tracking_uri in conf/<env>/mlflow.yml to another store."
            ) from None
    elif parsed.scheme != "sqlite" and path.exists() and not path.is_dir():
        raise StoreError(f"The MLflow store {path} ({shown}) is a file, not a folder: set "
                         "server.mlflow_tracking_uri in conf/<env>/mlflow.yml to a folder or a sqlite:/// URI.")
    probe = folder if folder.exists() else folder.parent
    if probe.exists() and not os.access(probe, os.R_OK | os.W_OK):
        raise StoreError(f"The MLflow store {path} ({shown}) is not readable and writable by this user: fix the "
                         f"permissions of {probe} or set server.mlflow_tracking_uri in conf/<env>/mlflow.yml.")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"The MLflow store {path} ({shown}) is not readable and writable by this user: fix its "
                         "permissions or set server.mlflow_tracking_uri in conf/<env>/mlflow.yml.")


class EpochLogger:
    """Logs metric dicts to one MLflow run by id: picklable, so a spawned rank 0 can use it."""

    def __init__(self, run_id: str, tracking_uri: str):
        self.run_id = run_id
        self.tracking_uri = tracking_uri

    @classmethod
    def for_active_run(cls) -> "EpochLogger | None":
        """A logger for the active run, or None when MLflow tracking is off."""
        run = mlflow.active_run()
        return cls(run.info.run_id, mlflow.get_tracking_uri()) if run else None

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)

    def resumed(self, previous_run_id: str | None, role: str) -> None:
        """Link this run to the run whose checkpoint it resumed (a killed run is marked KILLED).

        The resuming run logs the earlier epochs again, so it holds the whole curve; the two
        runs point at each other through the tags ``hmsa.<role>.resumed_from_run`` and
        ``hmsa.<role>.resumed_by_run``.
        """
        if not previous_run_id or previous_run_id == self.run_id:
            return
        client = MlflowClient(self.tracking_uri)
        client.set_tag(self.run_id, RESUMED_FROM_TAG.format(role=role), previous_run_id)
        try:
            previous = client.get_run(previous_run_id)
        except mlflow.exceptions.MlflowException:  # another store, or deleted
            return
        client.set_tag(previous_run_id, RESUMED_BY_TAG.format(role=role), self.run_id)
        if previous.info.status == "RUNNING":  # it was killed: nothing will ever end it
            client.set_terminated(previous_run_id, "KILLED")


#: tags naming the process that runs a run, so that a later run can tell it was killed
TAG_HOST = "hmsa.host"
TAG_PID = "hmsa.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def claim_run(run_id: str, client: MlflowClient | None = None) -> list[str]:
    """Tag ``run_id`` with this host and process, and mark KILLED every other RUNNING run of
    its experiment that a process on this host started and that no longer exists (a
    ``kill -9``, a lost machine: nothing else would ever end them). Returns those run ids."""
    client = client or MlflowClient()
    host, pid = socket.gethostname(), os.getpid()
    client.set_tag(run_id, TAG_HOST, host)
    client.set_tag(run_id, TAG_PID, str(pid))
    experiment = client.get_run(run_id).info.experiment_id
    ended = []
    for run in client.search_runs([experiment], filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'"):
        other = run.data.tags.get(TAG_PID, "")
        if run.info.run_id != run_id and other.isdigit() and int(other) != pid and not _alive(int(other)):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


class ModelLoadError(LookupError):
    """An MLflow model cannot be loaded (missing, not an hmsa model, unsafe or damaged weights);
    the message names it and says what to do."""


class ModelNotFoundError(ModelLoadError):
    """A registered model, alias or version is not in the store; the message says what is."""


#: the pyfunc artifact that holds the model bundle (configuration and weights)
BUNDLE_ARTIFACT = "bundle"


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


def _missing(model_uri: str, client: MlflowClient) -> str | None:
    """What ``model_uri`` names that the registry lacks, or None when it has it all."""
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.match(model_uri)
    if not match:
        return None
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        return (f"there is no registered model {name!r} (registered: {', '.join(names) or 'none'}). Train it first "
                "(kedro run), or point --tracking-uri / MLFLOW_TRACKING_URI at the store that has it")
    aliases = dict(model.aliases or {})
    listing = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
    if alias and alias not in aliases:
        hint = (f" {alias!r} is set by the evaluation pipeline (kedro run --pipelines evaluation)."
                if alias == "champion" else "")
        usable = next(iter(sorted(aliases)), None)
        instead = f"models:/{name}@{usable}" if usable else f"models:/{name}/<version>"
        return f"{name} has no alias {alias!r} (its aliases: {listing}).{hint} Or name one it has: {instead}"
    if version and version not in {v.version for v in client.search_model_versions(f"name = '{name}'")}:
        return f"{name} has no version {version} (its aliases: {listing})"
    return None


def load_segmenter(model_uri: str):
    """The Segmenter of an hmsa MLflow model (``models:/NAME@ALIAS``, ``runs:/...``,
    ``file:///folder``), from the current tracking store. A missing model, alias or version is
    named, with what the registry has and what to do.

    Only the model's YAML description and its weights file are read, the weights with
    ``torch.load(weights_only=True)``: no pickle and no source file of the model is ever run,
    so a model from a shared store cannot run code here.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from hmsa.models.bundle import ModelMismatchError, model_from_bundle

    store = without_credentials(mlflow.get_tracking_uri())
    try:
        # the MLmodel file alone (Model.load refuses file:// folders)
        description = Model.load(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/MLmodel"))
    except (MlflowException, OSError) as err:
        try:
            what = _missing(model_uri, MlflowClient())
        except MlflowException:
            what = None
        raise ModelNotFoundError(f"{model_uri}: {what or f'cannot load it ({err})'} [MLflow store: {store}]") from None
    entry = ((description.flavors.get("python_function") or {}).get("artifacts") or {}).get(BUNDLE_ARTIFACT) or {}
    relative = str(entry.get("path") or "")
    if not relative or relative.startswith("/") or ".." in Path(relative).parts:
        raise ModelLoadError(f"{model_uri}: not an hmsa model (its MLmodel names no {BUNDLE_ARTIFACT!r} weights "
                             "artifact inside the model); give a model that hmsa's training registered")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{relative}")
        return model_from_bundle(checkpoint.load(local), model_uri)
    except (MlflowException, OSError, checkpoint.CheckpointError, ModelMismatchError) as err:
        raise ModelLoadError(f"{model_uri}: {err} [MLflow store: {store}]") from None


def signature() -> ModelSignature:
    """trainId label maps out; scales, flip and fusion as parameters (the input, RGB 0..255
    (N, H, W, 3), is checked by ``hmsa.mlops.serving.as_uint8_images``)."""
    # no input schema: MLflow would cast the JSON to it, turning floats in [0, 1] into a black
    # uint8 image before the model could refuse them; the model checks dtype and range itself
    return ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
        params=ParamSchema([
            ParamSpec("scales", "double", [1.0], shape=(-1,)),
            ParamSpec("flip", "boolean", False),
            ParamSpec("fusion", "string", ""),
        ]),
    )


def log_and_register(bundle: dict, registered_name: str, pip_requirements: list[str],
                     limits: dict | None = None) -> dict | None:
    """Log ``bundle`` as a pyfunc model in the active run, register it, alias it ``newest``.
    ``limits``: the served model's ``hmsa.mlops.serving.ServingLimits``, as its model_config.

    Returns ``{"model_uri", "registered_model", "version", "alias"}``, or None when no run is
    active (tracking disabled, or a non-zero rank under torchrun).
    """
    if mlflow.active_run() is None:
        return None
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_bundle.pt"
        checkpoint.save_atomic(bundle, path)
        # models from code: the model is this source file plus the weights, no pickled object
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(package / "serving_code.py"), artifacts={BUNDLE_ARTIFACT: str(path)},
            code_paths=[str(package)], signature=signature(), pip_requirements=pip_requirements,
            model_config=dict(limits or {}),
            registered_model_name=registered_name,
        )
    version = info.registered_model_version
    MlflowClient().set_registered_model_alias(registered_name, NEWEST_ALIAS, version)
    return {"model_uri": info.model_uri, "registered_model": registered_name, "version": int(version),
            "alias": NEWEST_ALIAS}


#: model-version tags written by the evaluation
MIOU_TAG, SETTING_TAG = "hmsa.val_miou", "hmsa.best_setting"


def crown(versions: dict[str, tuple[str, str, float, str]], alias: str) -> dict:
    """Record each version's evaluated mIoU as version tags, then point ``alias`` of each
    registered model at its best-scoring evaluated version (this run's or an earlier one).

    ``versions``: ``{label: (registered model, version, mIoU, best setting)}``. Returns, per
    label, the registered model, the version holding the alias and its mIoU.
    """
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    crowned = {}
    for label, (name, version, miou, setting) in versions.items():
        try:
            client.set_model_version_tag(name, version, MIOU_TAG, f"{miou:.6f}")
            client.set_model_version_tag(name, version, SETTING_TAG, setting)
            scored = [(float(v.tags[MIOU_TAG]), int(v.version)) for v in
                      client.search_model_versions(f"name = '{name}'") if MIOU_TAG in v.tags]
            best_miou, best_version = max(scored)
            client.set_registered_model_alias(name, alias, str(best_version))
        except MlflowException as err:
            raise RuntimeError(
                f"MLflow registry at {mlflow.get_tracking_uri()}: cannot tag {name} version {version} ({err}). "
                "Was the model trained against another tracking store? Rerun its training pipeline."
            ) from err
        crowned[label] = {"registered_model": name, "alias": alias, "version": best_version, "miou": best_miou}
    return crowned
