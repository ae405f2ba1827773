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
    #: training checkpoints, one folder per model (``<checkpoints>/<role>``)
    checkpoints: str = "data/06_models/checkpoints"


#: parameters that moved: an old configuration is told where they went
MOVED = {
    "data.synthetic_root": "paths.synthcity (conf/base/parameters_paths.yml)",
    "data.converted_root": "paths.mapillary (conf/base/parameters_paths.yml)",
    "auto_labeling.output_dir": "the catalog's auto_labels_folder (conf/base/catalog.yml)",
    "paths.auto_labels": "the catalog's auto_labels_folder (conf/base/catalog.yml)",
}


class ParameterError(ValueError):
    """A parameter block does not validate; the message names each bad key and what to do."""


def parse_params(model: type[Model], raw: Any, key: str, conf_file: str | None = None,
                 source=None) -> Model:
    """Validate the parameter block ``key`` (a dict from conf/) against ``model``.

    Unknown keys (typos), wrong types and out-of-range values are reported one per line,
    as ``key.sub.key: what is wrong``, with the file to edit: ``source(dotted key)`` names the
    file (or ``--params``) that set it, else ``conf_file``.
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
        lines, files = [], []
        for e in err.errors():
            where = ".".join(str(p) for p in (key, *e["loc"]))
            msg = e["msg"]
            if e["type"] == "extra_forbidden" and where in MOVED:
                msg = f"moved: set {MOVED[where]} instead"
            elif e["type"] == "extra_forbidden":
                msg = "unknown parameter (a typo?)"
            elif "input" in e and e["type"] not in ("missing", "value_error"):
                msg = f"{msg} (got {e['input']!r})"
            origin = source(where) if source else None
            files.append(origin or conf_file)
            lines.append(f"  {where}: {msg}" + (f" (set in {origin})" if origin else ""))
        named = list(dict.fromkeys(f for f in files if f))
        where = f" in {', '.join(named)}" if named else ""
        raise ParameterError(
            f"Invalid parameters '{key}'{where}:\n" + "\n".join(lines) + "\nFix them in conf/ or in --params."
        ) from None


def setting_source(project: Path | str, env: str | None = None, runtime: dict | None = None):
    """``source(dotted key)``: where ``kedro run --env env`` takes that parameter from, the
    way Kedro merges them: ``--params``, then conf/<env> (conf/local by default), then
    conf/base; None when no file sets it (a default of the code)."""
    import yaml

    def has(tree: Any, parts: list[str]) -> bool:
        for part in parts:
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    conf = Path(project) / "conf"
    files = []
    for folder in (env or CONFIG_LOADER_ARGS["default_run_env"], CONFIG_LOADER_ARGS["base_env"]):
        root = conf / folder
        found = sorted(p for p in root.rglob("*.y*ml") if p.name.startswith("parameters")
                       or any(part.startswith("parameters") for part in p.relative_to(root).parts[:-1]))
        files += found

    def load(path: Path) -> Any:
        try:
            return yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}

    trees = [(str(path.relative_to(conf.parent)), load(path)) for path in files]

    def source(dotted: str) -> str | None:
        parts = dotted.split(".")
        runtime_params = runtime or {}
        # the deepest key that is set (``crop.0`` is set by ``crop: [...]``), below the block itself
        for depth in range(len(parts), 1, -1):
            key = ".".join(parts[:depth])
            if has(runtime_params, parts[:depth]) or key in runtime_params:
                return "--params"
            for name, tree in trees:
                if has(tree, parts[:depth]):
                    return name
        return None

    return source


def parameter_blocks() -> dict[str, tuple[type[BaseModel], str]]:
    """Each top-level parameter block of conf/: its settings model and the file that sets it."""
    from hmsa.autolabel.config import AutoLabelConfig
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


def check_parameters(params: dict[str, Any], source=None) -> None:
    """Validate every parameter block before anything runs, so a typo fails in seconds; each
    error names the file that set the value (``source``, from :func:`setting_source`).

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
    for key, (model, conf_file) in blocks.items():
        if key in params:
            parse_params(model, params[key], key, conf_file, source)


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
