"""A picture of the five pipelines and what flows between them: ``python -m hmsa.commands.pipeline_picture [out.png]``.

Drawn from the registered Kedro pipelines themselves (so it cannot drift from the code):
one column per stage, listing its nodes, and an arrow for each stage that reads another's
outputs, labelled with those datasets. For the interactive view, install the ``viz`` extra
and run ``kedro viz`` (or ``kedro viz build``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from hmsa.io.files import atomic_path

DEFAULT_OUT = Path("docs/pipeline.png")


def stage_graph(pipelines: dict) -> tuple[list[str], dict[str, list[str]], dict[tuple[str, str], list[str]]]:
    """The stages in workflow order, the node names of each, and the datasets each ordered
    pair of stages passes (outputs of the first read by the second; parameters left out)."""
    from hmsa.pipeline_registry import STAGES

    stages = [s for s in STAGES if s in pipelines]
    nodes = {s: [n.name for n in pipelines[s].nodes] for s in stages}
    outputs = {s: set(pipelines[s].all_outputs()) for s in stages}
    flows: dict[tuple[str, str], list[str]] = {}
    for reader in stages:
        inputs = {d for d in pipelines[reader].inputs() if not d.startswith("params:") and d != "parameters"}
        for writer in stages:
            if writer != reader and inputs & outputs[writer]:
                flows[(writer, reader)] = sorted(inputs & outputs[writer])
    return stages, nodes, flows


def draw(stages: list[str], nodes: dict[str, list[str]], flows: dict[tuple[str, str], list[str]]) -> Figure:
    """The stage graph as a figure: adjacent stages linked across the gap between their
    boxes, farther ones through lanes below them."""
    step, box, top, bottom = 3.4, 2.3, 3.0, 0.6
    far = [f for f in flows if stages.index(f[1]) - stages.index(f[0]) > 1]
    fig, ax = plt.subplots(figsize=(step * len(stages) * 0.95, 3.4 + 0.45 * len(far)))
    ax.set_xlim(-0.1, step * len(stages) - step + box + 0.1)
    ax.set_ylim(bottom - 0.6 - 0.55 * len(far), top + 0.5)
    ax.axis("off")
    colors = plt.get_cmap("Set2").colors
    left = {stage: i * step for i, stage in enumerate(stages)}
    for i, stage in enumerate(stages):
        x = left[stage]
        ax.add_patch(FancyBboxPatch((x, bottom), box, top - bottom, boxstyle="round,pad=0.04",
                                    facecolor=colors[i % len(colors)], edgecolor="black", linewidth=0.8))
        ax.text(x + box / 2, top - 0.2, stage, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 0.1, top - 0.45, "\n".join(nodes[stage]), ha="left", va="top", fontsize=7.5, family="monospace")
    arrow = {"arrowstyle": "-|>", "color": "0.25", "linewidth": 1.0, "shrinkA": 0, "shrinkB": 0}
    for (writer, reader), datasets in flows.items():
        if (writer, reader) in far:
            continue
        y = (top + bottom) / 2 - 0.3
        ax.annotate("", xy=(left[reader], y), xytext=(left[writer] + box, y), arrowprops=arrow)
        ax.text(left[writer] + box + (step - box) / 2, y + 0.08, "\n".join(datasets),
                ha="center", va="bottom", fontsize=5.5, color="0.2")
    for lane, (writer, reader) in enumerate(sorted(far, key=lambda f: (stages.index(f[0]), stages.index(f[1])))):
        y = bottom - 0.35 - 0.55 * lane
        x0 = left[writer] + box * (0.3 + 0.1 * lane % 0.5)
        x1 = left[reader] + box * (0.7 - 0.1 * lane % 0.5)
        ax.plot([x0, x0, x1], [bottom, y, y], color="0.45", linewidth=0.9)
        ax.annotate("", xy=(x1, bottom), xytext=(x1, y), arrowprops={**arrow, "color": "0.45"})
        ax.text((x0 + x1) / 2, y + 0.04, ", ".join(flows[(writer, reader)]), ha="center", va="bottom", fontsize=6,
                color="0.2")
    ax.set_title("kedro run: the five pipelines (boxes: their nodes; arrows: the datasets a stage reads "
                 "from an earlier one)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Write the picture (default docs/pipeline.png)."""
    from kedro.framework.project import configure_project

    from hmsa.pipeline_registry import register_pipelines

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DEFAULT_OUT
    configure_project("hmsa")
    fig = draw(*stage_graph(register_pipelines()))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
