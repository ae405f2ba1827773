"""Turning a parameter block from conf/ into a typed, validated settings object."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from omegaconf.resolvers import oc
from pydantic import BaseModel, ConfigDict, ValidationError

Model = TypeVar("Model", bound=BaseModel)

#: how Kedro loads conf/ (settings.py), and how hmsa's own commands read it the same way.
#: soft: an environment's parameter files (conf/claims) override single keys of conf/base.
#: oc.env: conf/cityscapes reads $CITYSCAPES_DATASET, mlflow.yml $MLFLOW_TRACKING_URI (Kedro
#: enables oc.env for credentials only unless a project registers it)
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "custom_resolvers": {"oc.env": oc.env},
}


class PathsConfig(BaseModel):
    """Where the workflow writes the folders its stages make (``paths:``).

    Locations, not experiment settings: they live apart from the parameter files DVC tracks,
    because they are built from Kedro's ``${globals:data_dir}``, which DVC cannot read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: SynthCity is generated here (data.source: synthetic)
    synthcity: str = "data/01_raw/synthcity"
    #: Mapillary Vistas is converted here (data.source: mapillary)
    mapillary: str = "data/02_intermediate/mapillary"
    #: the auto-labels' PNGs: the folder of the catalog's ``auto_labels``
    auto_labels: str = "data/04_feature/auto_labels"
    #: training checkpoints, one folder per model (``<checkpoints>/<role>``)
    checkpoints: str = "data/06_models/checkpoints"


#: parameters that moved to ``paths:``: an old configuration is told where they went
MOVED = {
    "data.synthetic_root": "paths.synthcity",
    "data.converted_root": "paths.mapillary",
    "auto_labeling.output_dir": "paths.auto_labels",
}


class ParameterError(ValueError):
    """A parameter block does not validate; the message names each bad key and what to do."""


def parse_params(model: type[Model], raw: Any, key: str, conf_file: str | None = None) -> Model:
    """Validate the parameter block ``key`` (a dict from conf/) against ``model``.

    Unknown keys (typos), wrong types and out-of-range values are reported one per line,
    as ``key.sub.key: what is wrong``, with the file to edit.
    """
    if isinstance(raw, model):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParameterError(f"Parameter '{key}' must be a mapping of settings, got {type(raw).__name__}: {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in (key, *e["loc"]))
            msg = e["msg"]
            if e["type"] == "extra_forbidden" and where in MOVED:
                msg = f"moved: set {MOVED[where]} instead (conf/base/parameters_paths.yml)"
            elif e["type"] == "extra_forbidden":
                msg = "unknown parameter (a typo?)"
            elif "input" in e and e["type"] not in ("missing", "value_error"):
                msg = f"{msg} (got {e['input']!r})"
            lines.append(f"  {where}: {msg}")
        where = f" in {conf_file}" if conf_file else ""
        raise ParameterError(
            f"Invalid parameters '{key}'{where}:\n" + "\n".join(lines) + "\nFix them in conf/ or in --params."
        ) from None


def parameter_blocks() -> dict[str, tuple[type[BaseModel], str]]:
    """Each top-level parameter block of conf/: its settings model and the file that sets it."""
    from hmsa.autolabel import AutoLabelConfig
    from hmsa.data.config import DataConfig
    from hmsa.evaluation.config import EvaluationConfig
    from hmsa.training.config import RoleConfig

    return {
        "data": (DataConfig, "conf/base/parameters_data_ingestion.yml"),
        "teacher": (RoleConfig, "conf/base/parameters_teacher_training.yml"),
        "auto_labeling": (AutoLabelConfig, "conf/base/parameters_auto_labeling.yml"),
        "student": (RoleConfig, "conf/base/parameters_student_training.yml"),
        "evaluation": (EvaluationConfig, "conf/base/parameters_evaluation.yml"),
        "paths": (PathsConfig, "conf/base/parameters_paths.yml"),
    }


def check_parameters(params: dict[str, Any]) -> None:
    """Validate every parameter block before anything runs, so a typo fails in seconds.

    An unknown top-level key (``--params studnet.trainer.seed=1``) is an error too: Kedro
    would otherwise add it silently and the run would ignore it.
    """
    blocks = parameter_blocks()
    unknown = sorted(set(params) - set(blocks))
    if unknown:
        raise ParameterError(
            f"Unknown parameter block(s) {unknown}: the parameters are {sorted(blocks)}. "
            "Check the spelling in conf/ or in --params."
        )
    for key in blocks:
        if key in params:
            parse_block(key, params[key])


def parse_block(key: str, raw: Any) -> BaseModel:
    """The top-level parameter block ``key`` (``data``, ``teacher``, ...), validated."""
    model, conf_file = parameter_blocks()[key]
    return parse_params(model, raw, key, conf_file)


def project_conf(key: str, project: Path | str = ".", env: str | None = None) -> dict[str, Any]:
    """The project's configuration ``key`` (``parameters``, ``mlflow``, ``globals``...) as
    ``kedro run --env env`` sees it: conf/base, then conf/<env> (conf/local by default), with
    the project's resolvers (``${oc.env:...}``, ``${globals:...}``)."""
    from kedro.config import OmegaConfigLoader

    args = {**CONFIG_LOADER_ARGS, "default_run_env": env or CONFIG_LOADER_ARGS["default_run_env"]}
    loader = OmegaConfigLoader(str(Path(project) / "conf"), **args)
    loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
    return loader[key]
