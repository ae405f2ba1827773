"""Turning a parameter block from conf/ into a typed, validated settings object."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


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
            if e["type"] == "extra_forbidden":
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
