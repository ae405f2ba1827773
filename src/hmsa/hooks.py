"""Kedro hooks: tag every MLflow run with what it was made from."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

from hmsa import provenance

log = logging.getLogger(__name__)

#: tag names, for readers of runs (tests, notebooks, the evaluation pipeline)
TAG_GIT_COMMIT = "hmsa.git_commit"
TAG_RAW_DATA_HASH = "hmsa.raw_data.dvc_md5"
TAG_RAW_DATA_SOURCE = "hmsa.raw_data.source"
TAG_RAW_DATA_ROOT = "hmsa.raw_data.root"


class ProvenanceHook:
    """Tags the run kedro-mlflow opened with the git commit and the raw data's DVC hash.

    Also names the run after the pipelines it ran: ``kedro run`` with no ``--pipelines``
    would otherwise be called ``__default__``.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Set the git tags and the run name once kedro-mlflow has started the run."""
        if mlflow.active_run() is None:
            return
        commit = provenance.git_commit(run_params.get("project_path") or ".")
        if commit:
            mlflow.set_tags({TAG_GIT_COMMIT: commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")})
        names = run_params.get("pipeline_names") or ["__default__"]
        if names == ["__default__"]:
            from kedro.framework.project import pipelines

            from hmsa.pipeline_registry import default_chain

            mlflow.set_tag("mlflow.runName", "+".join(default_chain(list(pipelines))))

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        """Tag the run with the raw data's identity as soon as ingestion has it."""
        info = outputs.get("raw_data_info")
        if info is None or mlflow.active_run() is None:
            return
        tags = {TAG_RAW_DATA_SOURCE: info["source"], TAG_RAW_DATA_ROOT: info["root"]}
        if info.get("dvc_md5"):
            tags[TAG_RAW_DATA_HASH] = info["dvc_md5"]
        mlflow.set_tags(tags)
