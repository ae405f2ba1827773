"""Kedro hooks: check parameters and the MLflow store before anything runs; tag every MLflow
run with what it was made from (code, data, environment, DVC experiment); one writer under torchrun."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines
from kedro.io import MemoryDataset

from hmsa.mlops import provenance
from hmsa.pipeline_registry import STAGES, run_name

log = logging.getLogger(__name__)

#: tag names, for readers of runs (tests, notebooks, the evaluation pipeline)
TAG_GIT_COMMIT = "hmsa.git_commit"
TAG_RAW_DATA_HASH = "hmsa.raw_data.dvc_md5"
TAG_RAW_DATA_SOURCE = "hmsa.raw_data.source"
TAG_RAW_DATA_ROOT = "hmsa.raw_data.root"
TAG_KEDRO_ENV = "hmsa.kedro_env"
#: the DVC experiment that ran this pipeline (``dvc exp run``): a row of ``dvc exp show`` finds
#: its MLflow runs with ``tags.dvc_experiment = '<name>'``. No dots: MLflow's search needs none.
TAG_DVC_EXPERIMENT = "dvc_experiment"
TAG_DVC_BASELINE = "dvc_baseline_rev"


class MissingInputError(RuntimeError):
    """A run reads an earlier stage's output that does not exist; the message names the stage."""


class PreflightHook:
    """Fails in seconds, with what to do, on what would otherwise fail hours into a run.

    Runs before kedro-mlflow's own hook (``tryfirst``), which would otherwise stop on an
    unreadable store with a database traceback.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        """Validate the environment, every parameter block (typos, types, ranges) and the MLflow store."""
        from hmsa.project.config import check_parameters, setting_source
        from hmsa.mlops.tracking import check_store

        conf = Path(context.project_path) / "conf"
        if context.env and not (conf / context.env).is_dir():  # Kedro would go on with conf/base alone
            envs = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("base", "local"))
            raise ValueError(f"--env {context.env}: there is no conf/{context.env}/ in {context.project_path}. "
                             f"The environments are: {', '.join(envs)} (none: conf/local over conf/base).")
        check_parameters(context.params, setting_source(context.project_path, context.env,
                                                        getattr(context, "_runtime_params", None)))
        loader = context.config_loader
        if "mlflow" not in loader.config_patterns:
            loader.config_patterns["mlflow"] = ["mlflow*", "mlflow*/**", "**/mlflow*"]
        try:
            mlflow_conf = loader["mlflow"]
        except Exception:  # no mlflow.yml: kedro-mlflow's defaults, checked by MLflow itself
            return
        uri = (mlflow_conf.get("server") or {}).get("mlflow_tracking_uri")
        parent = os.environ.get("DVC_ROOT")  # the repository a queued or --temp `dvc exp run` came from
        if uri and parent and "MLFLOW_TRACKING_URI" not in os.environ:
            from hmsa.mlops.tracking import parent_store

            name = ((mlflow_conf.get("tracking") or {}).get("experiment") or {}).get("name") or "Default"
            moved = parent_store(str(uri), context.project_path, parent, name)
            if moved:
                # mlflow.yml reads it first: kedro-mlflow, the next hook, logs there
                os.environ["MLFLOW_TRACKING_URI"] = uri = moved
                log.info("DVC runs this experiment in a copy of the project: MLflow logs to %s", moved)
        if uri:
            check_store(str(uri), context.project_path)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Refuse a run that would write a dataset the environment does not have, or that
        reads an output of an earlier stage that was never made (with the stage that makes it)."""
        from hmsa.project.datasets import AbsentDataset

        for name in sorted(pipeline.all_outputs()):
            if name in catalog and isinstance(catalog[name], AbsentDataset):
                raise ValueError(f"{name}: {catalog[name].reason}")
        makers = {out: stage for stage in STAGES  # every stage's, not only the ones this run loaded
                  for out in importlib.import_module(f"hmsa.pipelines.{stage}").create_pipeline().all_outputs()}
        # an AbsentDataset is missing by design: an environment without that stage (mapillary)
        missing = [name for name in sorted(pipeline.inputs()) if name in makers and name in catalog
                   and not isinstance(catalog[name], AbsentDataset) and not catalog.exists(name)]
        if missing:
            stages = [stage for stage in STAGES if stage in {makers[name] for name in missing}]
            where = [f"{name} ({getattr(catalog[name], '_filepath', None) or type(catalog[name]).__name__})"
                     for name in missing]
            raise MissingInputError(
                f"This run reads {', '.join(where)}, which no earlier run has made. Run the stage that makes "
                f"{'them' if len(missing) > 1 else 'it'} first: kedro run --pipelines {','.join(stages)} (or the "
                "whole chain: kedro run), or fetch the team's outputs with dvc pull."
            )
        if "raw_data_info" in pipeline.inputs() and catalog.exists("raw_data_info"):
            provenance.check_raw_data(catalog.load("raw_data_info"))  # the tree this run reads is the one ingested


class ProvenanceHook:
    """Tags the run kedro-mlflow opened with the git commit and the raw data's DVC hash (and
    the process running it, which lets the next run end runs that were killed).

    Also names the run after the pipelines it ran, in workflow order: kedro-mlflow would
    use ``__default__`` for a plain ``kedro run`` and Kedro's own order otherwise.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Set the git tags and the run name once kedro-mlflow has started the run, and the
        raw data's identity when this run reads an earlier ingestion's record of it."""
        if mlflow.active_run() is None:
            return
        from hmsa.mlops.tracking import claim_run

        for killed in claim_run(mlflow.active_run().info.run_id):
            log.info("MLflow run %s was left RUNNING by a process that no longer exists: marked KILLED", killed)
        commit = provenance.git_commit(run_params.get("project_path") or ".")
        if commit:
            mlflow.set_tags({TAG_GIT_COMMIT: commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")})
        names = run_params.get("pipeline_names") or ["__default__"]
        name = run_name(names, list(pipelines))
        if run_params.get("namespaces"):  # kedro run --namespaces student_single: the models it trained
            name = f"{name} ({','.join(run_params['namespaces'])})"
        mlflow.set_tag(TAG_KEDRO_ENV, run_params.get("env") or "local")
        experiment = os.environ.get("DVC_EXP_NAME")  # set by DVC for the stages of `dvc exp run`
        if experiment:
            mlflow.set_tags({TAG_DVC_EXPERIMENT: experiment,
                             TAG_DVC_BASELINE: os.environ.get("DVC_EXP_BASELINE_REV", "")})
            name = f"{name} [{experiment}]"
        mlflow.set_tag("mlflow.runName", name)
        if "raw_data_info" not in pipeline.all_outputs() and catalog.exists("raw_data_info"):
            self._tag_raw_data(catalog.load("raw_data_info"))

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        """Tag the run with the raw data's identity as soon as ingestion has it."""
        info = outputs.get("raw_data_info")
        if info is not None and mlflow.active_run() is not None:
            self._tag_raw_data(info)

    @staticmethod
    def _tag_raw_data(info: dict[str, Any]) -> None:
        tags = {TAG_RAW_DATA_SOURCE: info["source"], TAG_RAW_DATA_ROOT: info["root"]}
        if info.get("dvc_md5"):
            tags[TAG_RAW_DATA_HASH] = info["dvc_md5"]
        mlflow.set_tags(tags)


def launcher_rank() -> int:
    """This process's rank under torchrun; 0 otherwise (read where training reads it)."""
    from hmsa.runtime.distributed import env_world  # torch loads when a hook runs, not on import

    return env_world()[0]


class SingleWriterHook:
    """Under torchrun every rank runs the Kedro pipeline; only rank 0 may write or log.

    On the other ranks MLflow tracking is switched off (before kedro-mlflow opens a run)
    and the pipeline's outputs become in-memory datasets, so that files are written once.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        """Switch kedro-mlflow off for every pipeline on ranks other than 0."""
        if launcher_rank() != 0 and hasattr(context, "mlflow"):
            context.mlflow.tracking.disable_tracking.pipelines = sorted(pipelines)
            log.info("rank %d: MLflow tracking off, rank 0 logs", launcher_rank())

    @hook_impl
    def before_pipeline_run(self, pipeline, catalog) -> None:
        """Keep the outputs of ranks other than 0 in memory."""
        if launcher_rank() == 0:
            return
        for name in pipeline.all_outputs():
            catalog[name] = MemoryDataset()


#: the project's run lock: a file under the project root that a running `kedro run` holds locked
RUN_LOCK = ".kedro-run.lock"


class RunLockError(RuntimeError):
    """Another run (a `kedro run`, or a `dvc repro` stage) is using this project."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dvc_writers(project: Path) -> list[dict]:
    """The live DVC processes writing outputs of ``project`` now (``dvc repro``, ``dvc exp run``),
    as DVC's own lock table (.dvc/tmp/rwlock) lists them: pid, command and output."""
    import json

    try:
        table = json.loads((project / ".dvc" / "tmp" / "rwlock").read_text())
    except (OSError, ValueError):
        return []
    return [{**holder, "path": path} for path, holder in (table.get("write") or {}).items()
            if isinstance(holder, dict) and _alive(int(holder.get("pid", 0) or 0))]


class RunLockHook:
    """One `kedro run` at a time per project: two at once overwrite each other's checkpoints,
    models and auto-labels without a word, and a run during `dvc repro` reads outputs DVC has
    just removed to rebuild them. Both are refused before anything runs, naming the holder.

    The lock is an OS file lock on ``.kedro-run.lock``, which the OS drops when its process
    ends, however it ends: a lock left by a killed run is simply taken by the next run. Under
    torchrun, rank 0 holds it for the job; a stage that DVC itself runs (``$DVC_STAGE`` set)
    does not look at DVC's own locks.
    """

    def __init__(self):
        self._held = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Take the project's run lock, or stop with who holds it."""
        import fcntl
        import json
        import socket
        import sys
        import time

        if launcher_rank() != 0:
            return
        project = Path(run_params.get("project_path") or ".")
        if not os.environ.get("DVC_STAGE"):
            for holder in dvc_writers(project)[:1]:
                raise RunLockError(
                    f"DVC is running in this project: PID {holder['pid']} ({holder.get('cmd', '?')}) is writing "
                    f"{holder['path']}; it removes and rebuilds the outputs this run would read. Wait for it to end "
                    "(or run the pipelines through it: make repro).")
        handle = open(project / RUN_LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            raise RunLockError(
                f"Another kedro run is running in this project: PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}: {holder.get('command', '?')}. "
                f"Two runs in one project overwrite each other's checkpoints, models and auto-labels: wait for it "
                f"to end, or stop it (kill {holder.get('pid', '<pid>')}). The lock is {project / RUN_LOCK}; a run "
                "that was killed leaves none behind.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}))
        handle.flush()
        self._held = handle

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()  # closing the file drops the lock
            self._held = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Let the next run in."""
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Let the next run in, after a failed run too."""
        self._release()
