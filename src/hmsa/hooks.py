"""Kedro hooks: check parameters and the MLflow store before anything runs; tag every MLflow
run with what it was made from (code, data, environment, DVC experiment); one writer under torchrun."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines
from kedro.io import MemoryDataset

from hmsa import provenance
from hmsa.pipeline_registry import run_name

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


class PreflightHook:
    """Fails in seconds, with what to do, on what would otherwise fail hours into a run.

    Runs before kedro-mlflow's own hook (``tryfirst``), which would otherwise stop on an
    unreadable store with a database traceback.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        """Validate the environment, every parameter block (typos, types, ranges) and the MLflow store."""
        from hmsa.config import check_parameters
        from hmsa.tracking import check_store

        conf = Path(context.project_path) / "conf"
        if context.env and not (conf / context.env).is_dir():  # Kedro would go on with conf/base alone
            envs = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("base", "local"))
            raise ValueError(f"--env {context.env}: there is no conf/{context.env}/ in {context.project_path}. "
                             f"The environments are: {', '.join(envs)} (none: conf/local over conf/base).")
        check_parameters(context.params)
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
            from hmsa.tracking import parent_store

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
        """Refuse a run that would write a dataset the environment does not have."""
        from hmsa.datasets import AbsentDataset

        for name in sorted(pipeline.all_outputs()):
            if name in catalog and isinstance(catalog[name], AbsentDataset):
                raise ValueError(f"{name}: {catalog[name].reason}")


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
        from hmsa.tracking import claim_run

        for killed in claim_run(mlflow.active_run().info.run_id):
            log.info("MLflow run %s was left RUNNING by a process that no longer exists: marked KILLED", killed)
        commit = provenance.git_commit(run_params.get("project_path") or ".")
        if commit:
            mlflow.set_tags({TAG_GIT_COMMIT: commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")})
        names = run_params.get("pipeline_names") or ["__default__"]
        name = run_name(names, list(pipelines))
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
    from hmsa.training.distributed import env_world  # torch loads when a hook runs, not on import

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
