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
