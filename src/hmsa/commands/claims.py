"""The paper's three claims, measured over several seeds: ``python -m hmsa.commands.claims`` (``make claims``).

Runs the Kedro environment ``claims`` (conf/claims: longer training, every baseline): the
whole chain while there is no teacher yet, then per seed student training and evaluation
(the teacher and its auto-labels are shared: the seeds vary the students). Each seed's
students checkpoint into their own folder, so a killed seed resumes where it stopped, and a
seed whose evaluation table is kept is not run again (``--rerun`` to force it). Every table
is stamped with a fingerprint of the environment's parameters, the SynthCity generator and
the package's source (all but this runner and the benchmarks, which train nothing): a table
made with another setup is made again, so that the seeds of one report always come from one
setup. The teacher and its auto-labels carry their own fingerprint, over the parameters they
read (``data``, ``teacher``, ``auto_labeling``), the generator and the source: a change to
the students or the evaluation alone reuses them. Checkpoints are stamped the same way (the
students' with everything but the evaluation), so training resumes only what this setup made. The claims are reported as mean +- std over seeds:

1. HMSA on [0.5, 1, 2] against the single-scale-trained baseline at 1.0 and with average
   fusion on the same scales (goal: >= 2 and >= 1 point, gap > 2 std);
2. the student on auto-labels against the student on human coarse labels (goal: >= 1 point);
3. HMSA trained on two scales against explicit attention trained on three (goal: within
   1 point), with the training-memory ratio beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmsa.io.files import atomic_path

MS = "0.5-1.0-2.0"


@dataclass(frozen=True)
class Comparison:
    """``ours`` minus ``theirs``, each a (model, setting) row of the evaluation table."""

    claim: str
    ours: tuple[str, str]
    theirs: tuple[str, str]
    goal: float
    #: the gap must also exceed this many standard deviations of itself (0: no such condition)
    std_factor: float = 0.0
    #: "above": gap >= goal; "within": |gap| <= goal
    kind: str = "above"


COMPARISONS = (
    Comparison("1a. HMSA [0.5,1,2] vs single-scale model at 1.0", ("student", f"hierarchical/{MS}"),
               ("student_single", "single/1.0"), 2.0, 2.0),
    Comparison("1b. HMSA [0.5,1,2] vs single-scale model, average fusion [0.5,1,2]", ("student", f"hierarchical/{MS}"),
               ("student_single", f"average/{MS}"), 1.0, 2.0),
    Comparison("1c. HMSA fusion vs average fusion, same HMSA model [0.5,1,2]", ("student", f"hierarchical/{MS}"),
               ("student", f"average/{MS}"), 1.0, 2.0),
    Comparison("2. student on auto-labels vs on human coarse labels", ("student", f"hierarchical/{MS}"),
               ("student_human", f"hierarchical/{MS}"), 1.0),
    Comparison("3. HMSA (2 training scales) vs explicit attention (3)", ("student", f"hierarchical/{MS}"),
               ("student_explicit", f"explicit/{MS}"), 1.0, kind="within"),
)


def _miou(table: pd.DataFrame, model: str, setting: str) -> float:
    rows = table[(table["model"] == model) & (table["setting"] == setting)]
    return float(rows["miou"].iloc[0]) * 100 if len(rows) else float("nan")


def summarise(tables: dict[int, pd.DataFrame], memory_ratio: float | None = None) -> pd.DataFrame:
    """One row per comparison: mean +- std (over seeds, in points) of each side and of the
    paired gap, the goal, and whether it is met."""
    rows = []
    for c in COMPARISONS:
        ours = np.array([_miou(t, *c.ours) for t in tables.values()])
        theirs = np.array([_miou(t, *c.theirs) for t in tables.values()])
        gap = ours - theirs
        std = float(np.std(gap, ddof=1)) if len(gap) > 1 else float("nan")
        mean = float(np.mean(gap))
        if c.kind == "within":
            met = bool(abs(mean) <= c.goal)
        else:
            met = bool(mean >= c.goal and (c.std_factor == 0 or (np.isfinite(std) and mean > c.std_factor * std)))
        goal = f"|gap| <= {c.goal:g}" if c.kind == "within" else f">= {c.goal:g}" + (
            f", > {c.std_factor:g} std" if c.std_factor else "")
        rows.append({
            "claim": c.claim, "ours": f"{c.ours[0]} {c.ours[1]}", "theirs": f"{c.theirs[0]} {c.theirs[1]}",
            "ours_mean": np.mean(ours), "ours_std": np.std(ours, ddof=1) if len(ours) > 1 else np.nan,
            "theirs_mean": np.mean(theirs), "theirs_std": np.std(theirs, ddof=1) if len(theirs) > 1 else np.nan,
            "gap_mean": mean, "gap_std": std, "goal": goal, "met": met and bool(np.isfinite(mean)),
            "seeds": len(gap),
            "note": f"training memory explicit / HMSA: {memory_ratio:.2f}x" if memory_ratio and c.kind == "within" else "",
        })
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (points, mean +- std over seeds)."""
    def cell(text: str) -> str:  # a "|" inside a cell (as in "|gap| <= 1") would split the column
        return str(text).replace("|", "\\|")

    lines = ["| claim | ours | theirs | gap | goal | met |", "|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {cell(r.claim)} | {r.ours_mean:.1f} +- {r.ours_std:.1f} | {r.theirs_mean:.1f} +- {r.theirs_std:.1f} "
                     f"| {r.gap_mean:+.1f} +- {r.gap_std:.1f} | {cell(r.goal)} | {'yes' if r.met else 'no'}"
                     + (f" ({cell(r.note)})" if r.note else "") + " |")
    return "\n".join(lines)


def memory_ratio(env: str) -> float:
    """Saved-for-backward bytes of one training step, explicit over HMSA, for the student of ``env``."""
    import torch

    from hmsa.bench.training import saved_activation_bytes
    from hmsa.models import build_model
    from hmsa.training.config import RoleConfig

    role = RoleConfig.model_validate(_parameters(env)["student"])
    crop = tuple(role.trainer.crop)
    sizes = {}
    for kind in ("hmsa", "explicit"):
        torch.manual_seed(0)
        model = build_model(role.model.model_copy(update={"kind": kind, "pretrained": "none"})).train()
        sizes[kind] = saved_activation_bytes(model, torch.rand(2, 3, *crop), torch.randint(0, 19, (2, *crop)))
    return sizes["explicit"] / sizes["hmsa"]


#: the parameters the shared teacher and its auto-labels depend on (ingestion, teacher, auto-labelling)
TEACHER_SECTIONS = ("data", "teacher", "auto_labeling")


def _config(env: str, key: str) -> dict:
    """The environment's merged configuration ``key``, as ``kedro run --env env`` reads it."""
    from hmsa.project.config import project_conf

    return project_conf(key, ".", env)


def _parameters(env: str) -> dict:
    """The environment's merged parameters."""
    return _config(env, "parameters")


def _data_dir(env: str) -> Path:
    """Where ``kedro run --env env`` writes its outputs: ``data_dir`` of its ``globals.yml``."""
    return Path(_config(env, "globals")["data_dir"])


def fingerprint(env: str, sections: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> str:
    """What the claims depend on (16 hex digits): the environment's merged parameters (only
    ``sections`` of them when given, none of ``exclude``), the SynthCity generator version and
    the source of the ``hmsa`` package except this runner and the benchmarks (``hmsa.bench``),
    which ``kedro run`` never executes."""
    from hmsa.data.synthetic import GENERATOR_VERSION

    params = _parameters(env)
    if sections is not None:
        params = {name: params.get(name) for name in sections}
    params = {name: value for name, value in params.items() if name not in exclude}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(f"generator {GENERATOR_VERSION}".encode())
    package = Path(__file__).resolve().parents[1]  # the hmsa package
    for path in sorted(package.rglob("*.py")):
        if path == Path(__file__).resolve() or path.relative_to(package).parts[0] == "bench":
            continue
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fresh_checkpoints(folder: Path, setup: str) -> None:
    """Make ``folder`` hold checkpoints of ``setup`` only. The training loop resumes any
    ``last.pt`` made with the same parameters, whatever code made it; so checkpoints stamped
    with another setup (or with none) are removed and training starts afresh, while those of
    this setup stay, so that a killed run resumes where it stopped."""
    stamp = folder / "claims_setup.txt"
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text().strip() != setup):
        print(f"{folder}: checkpoints of another setup removed; training starts afresh", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(setup + "\n")


def _kedro(args: list[str]) -> None:
    cmd = [str(Path(sys.executable).parent / "kedro"), "run", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _run_seed(env: str, seed: int, rerun: bool, data_dir: Path, out: Path, timings: dict,
              setups: tuple[str, str, str]) -> None:
    """One seed's chain (the teacher and auto-labels only when their setup changed), its table
    copied to ``out``; ``timings`` updated and written."""
    setup, teacher_setup, training_setup = setups
    results = data_dir / "08_reporting" / "evaluation_results.csv"
    kept = timings.get(str(seed), {}).get("fingerprint") == setup
    if (out / f"seed_{seed}.csv").is_file() and kept and not rerun:
        print(f"seed {seed}: kept from an earlier run ({out / f'seed_{seed}.csv'})", flush=True)
        return
    if (out / f"seed_{seed}.csv").is_file() and not kept:
        print(f"seed {seed}: its table came from another setup (parameters, generator or code): "
              "running it again", flush=True)
    start = time.perf_counter()
    whole = (not (data_dir / "06_models" / "teacher.pt").is_file()
             or timings.get("teacher", {}).get("fingerprint") != teacher_setup)
    if not whole:
        print(f"seed {seed}: the teacher and its auto-labels are kept (their setup is unchanged)", flush=True)
    resumed = []  # the models that go on from a checkpoint: then the seconds are not a whole seed's
    if whole:
        teacher_dir = Path(_parameters(env)["paths"]["checkpoints"]) / "teacher"
        fresh_checkpoints(teacher_dir, teacher_setup)
        resumed += ["teacher"] if (teacher_dir / "last.pt").is_file() else []
    seed_dir = data_dir / "06_models" / "checkpoints" / f"seed_{seed}"
    fresh_checkpoints(seed_dir, training_setup)
    resumed += sorted(path.parent.name for path in seed_dir.glob("*/last.pt"))
    if resumed:
        print(f"seed {seed}: resuming {', '.join(resumed)} from checkpoints of this setup; its wall time "
              "will cover only what is left", flush=True)
    params = f"student.trainer.seed={seed},student.trainer.checkpoint_dir={seed_dir}/student"
    pipelines = [] if whole else ["--pipelines", "student_training,evaluation"]
    _kedro(["--env", env, *pipelines, "--params", params])
    with atomic_path(out / f"seed_{seed}.csv") as tmp:
        shutil.copyfile(results, tmp)
    timings[str(seed)] = {"seconds": round(time.perf_counter() - start, 1), "whole_chain": whole,
                          "resumed": resumed, "fingerprint": setup}
    if whole:
        timings["teacher"] = {"fingerprint": teacher_setup}
    with atomic_path(out / "timings.json") as tmp:
        tmp.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the seeds (unless ``--report-only``), then write and print the claims table."""
    parser = argparse.ArgumentParser(prog="python -m hmsa.commands.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--env", default="claims",
                        help="the Kedro environment (default: claims); its outputs and the claims tables go under "
                             "the data_dir of its globals.yml")
    parser.add_argument("--report-only", action="store_true", help="summarise the seeds already run")
    parser.add_argument("--rerun", action="store_true", help="run seeds again even when their table is kept")
    args = parser.parse_args(argv)
    if not (Path("conf") / args.env).is_dir():
        print(f"--env {args.env}: there is no conf/{args.env}/ here; run from the project's root and name an "
              f"environment under conf/ (default: claims)", file=sys.stderr)
        return 2

    # the run's own outputs: another environment's (a copy of conf/claims with one change) never mix in
    data_dir = _data_dir(args.env)
    out = data_dir / "08_reporting" / "claims"
    out.mkdir(parents=True, exist_ok=True)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    setup = fingerprint(args.env)
    teacher_setup = fingerprint(args.env, TEACHER_SECTIONS)
    # the students' checkpoints depend on all but the evaluation: an evaluation change reuses them
    training_setup = fingerprint(args.env, exclude=("evaluation",))
    if not args.report_only:
        for seed in args.seeds:
            _run_seed(args.env, seed, args.rerun, data_dir, out, timings, (setup, teacher_setup, training_setup))
    return _report(args.seeds, args.env, out, timings, setup)


def _report(seeds: list[int], env: str, out: Path, timings: dict, setup: str) -> int:
    """Summarise the seeds whose tables come from this setup into claims.csv and claims.md."""
    current = [seed for seed in seeds
               if (out / f"seed_{seed}.csv").is_file() and timings.get(str(seed), {}).get("fingerprint") == setup]
    stale = [seed for seed in seeds if (out / f"seed_{seed}.csv").is_file() and seed not in current]
    if stale:
        print(f"left out seeds {stale}: their tables came from another setup (rerun them)", file=sys.stderr)
    tables = {seed: pd.read_csv(out / f"seed_{seed}.csv") for seed in current}
    if not tables:
        print(f"no seed results under {out}: run without --report-only first", file=sys.stderr)
        return 1
    summary = summarise(tables, memory_ratio(env))
    with atomic_path(out / "claims.csv") as tmp:
        summary.to_csv(tmp, index=False)
    text = markdown(summary)
    with atomic_path(out / "claims.md") as tmp:
        tmp.write_text(text + "\n")
    print(f"claims over seeds {sorted(tables)} (val mIoU points, mean +- std):")
    print(text)
    print(f"per-seed wall time: {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
