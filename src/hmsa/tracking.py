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


def check_store(uri: str, project_path: Path | str = ".") -> None:
    """Fail early, with what to do, when the local MLflow store at ``uri`` is unusable.

    Checks ``sqlite:///`` files (a real, readable SQLite database in a writable folder) and
    local folder stores; remote stores (http, databricks, ...) are left to MLflow.
    """
    parsed = urlparse(uri)
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


def signature() -> ModelSignature:
    """uint8 RGB image batch in, trainId label maps out; scales, flip and fusion as parameters."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
        params=ParamSchema([
            ParamSpec("scales", "double", [1.0], shape=(-1,)),
            ParamSpec("flip", "boolean", False),
            ParamSpec("fusion", "string", ""),
        ]),
    )


def log_and_register(bundle: dict, registered_name: str, pip_requirements: list[str]) -> dict | None:
    """Log ``bundle`` as a pyfunc model in the active run, register it, alias it ``newest``.

    Returns ``{"model_uri", "registered_model", "version", "alias"}``, or None when no run is
    active (tracking disabled, or a non-zero rank under torchrun).
    """
    if mlflow.active_run() is None:
        return None
    from hmsa.serving import SegmenterPyfunc

    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_bundle.pt"
        checkpoint.save_atomic(bundle, path)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SegmenterPyfunc(), artifacts={"bundle": str(path)},
            code_paths=[str(package)], signature=signature(), pip_requirements=pip_requirements,
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
