"""The project's pipelines, and the order ``kedro run`` chains them in."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: the workflow's stages, in order; a stage joins ``__default__`` once it exists
STAGES: tuple[str, ...] = ("data_ingestion", "teacher_training", "auto_labeling", "student_training", "evaluation")


def default_chain(available: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The stages of ``STAGES`` that exist, in workflow order."""
    return tuple(name for name in STAGES if name in available)


def run_name(pipeline_names: list[str] | tuple[str, ...], available: list[str] | tuple[str, ...]) -> str:
    """A run's name: the pipelines it ran, in workflow order (``__default__`` spelled out)."""
    names: list[str] = []
    for name in pipeline_names:
        expanded = default_chain(available) if name == "__default__" else (name,)
        names.extend(n for n in expanded if n not in names)
    order = {name: i for i, name in enumerate(STAGES)}
    return "+".join(sorted(names, key=lambda n: (order.get(n, len(order)), n)))


class UnknownPipelineError(KeyError):
    """``kedro run --pipelines`` names a pipeline the project does not have."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def pipeline_names() -> list[str]:
    """The pipelines under ``hmsa/pipelines/`` (one package each)."""
    import importlib.resources

    folder = importlib.resources.files("hmsa.pipelines")
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")) and (p / "__init__.py").is_file())


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/`` and chain the stages as ``__default__``.

    A name ``kedro run --pipelines`` asks for that does not exist is refused with the list
    of names (Kedro would fail importing a module of that name)."""
    from kedro.framework.project import pipelines as requested

    known = pipeline_names()
    unknown = sorted(set(getattr(requested, "_requested_pipelines", None) or []) - {*known, "__default__"})
    if unknown:
        raise UnknownPipelineError(
            f"--pipelines {','.join(unknown)}: no such pipeline. The pipelines are: {', '.join(known)}; "
            f"__default__ (no --pipelines) runs them all: {' -> '.join(default_chain(known))}.")
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[name] for name in default_chain(list(pipelines))), Pipeline([]))
    return pipelines
