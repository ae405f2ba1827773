"""The claims summary: paired gaps over seeds, goals, and the std condition."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from hmsa.commands import claims
def _table(student_hier, student_avg, single_1, single_avg, human, explicit):
    rows = [("student", "hierarchical/0.5-1.0-2.0", student_hier), ("student", "average/0.5-1.0-2.0", student_avg),
            ("student_single", "single/1.0", single_1), ("student_single", "average/0.5-1.0-2.0", single_avg),
            ("student_human", "hierarchical/0.5-1.0-2.0", human), ("student_explicit", "explicit/0.5-1.0-2.0", explicit)]
    return pd.DataFrame([{"model": m, "setting": s, "miou": v} for m, s, v in rows])


def test_gaps_are_paired_per_seed_and_goals_checked():
    tables = {0: _table(0.50, 0.48, 0.45, 0.47, 0.49, 0.505),
              1: _table(0.52, 0.50, 0.47, 0.49, 0.50, 0.515),
              2: _table(0.51, 0.49, 0.46, 0.48, 0.495, 0.51)}
    summary = claims.summarise(tables, memory_ratio=4.1).set_index("claim")
    one_a = summary.loc[claims.COMPARISONS[0].claim]
    assert one_a["gap_mean"] == pytest.approx(5.0) and one_a["gap_std"] == pytest.approx(0.0, abs=1e-9)
    assert one_a["met"]
    one_b = summary.loc[claims.COMPARISONS[1].claim]
    assert one_b["gap_mean"] == pytest.approx(3.0) and one_b["met"]
    two = summary.loc[claims.COMPARISONS[3].claim]
    assert two["gap_mean"] == pytest.approx(1.5) and two["met"]
    three = summary.loc[claims.COMPARISONS[4].claim]
    assert three["gap_mean"] == pytest.approx(0.0, abs=1e-9) and three["met"] and "4.10x" in three["note"]
    text = claims.markdown(summary.reset_index())
    assert text.count("\n") == 1 + len(claims.COMPARISONS) and "+5.0 +- 0.0" in text
    # six columns in every row: the "|gap| <= 1" goal is escaped, not read as column borders
    assert all(re.sub(r"\\\|", "", line).count("|") == 7 for line in text.splitlines())
    assert "\\|gap\\| <= 1" in text


def test_a_gap_within_two_std_is_not_met():
    tables = {0: _table(0.50, 0.48, 0.40, 0.47, 0.49, 0.5), 1: _table(0.50, 0.48, 0.50, 0.47, 0.49, 0.5),
              2: _table(0.50, 0.48, 0.45, 0.47, 0.49, 0.5)}
    one_a = claims.summarise(tables).iloc[0]
    assert one_a["gap_mean"] == pytest.approx(5.0) and one_a["gap_std"] == pytest.approx(5.0)
    assert not one_a["met"]  # 5 points on average, but not above 2 std (10)


def test_a_missing_model_is_reported_not_met():
    table = _table(0.5, 0.48, 0.45, 0.47, 0.49, 0.5)
    summary = claims.summarise({0: table[table["model"] != "student_explicit"]})
    assert not summary.iloc[4]["met"]


def test_checkpoints_of_another_setup_are_removed_and_those_of_this_setup_resume(tmp_path, capsys):
    folder = tmp_path / "seed_0"
    (folder / "student").mkdir(parents=True)
    (folder / "student" / "last.pt").write_bytes(b"unstamped: made by who knows what")
    claims.fresh_checkpoints(folder, "A")
    assert not (folder / "student").exists() and "training starts afresh" in capsys.readouterr().out
    (folder / "student").mkdir()
    (folder / "student" / "last.pt").write_bytes(b"A's")
    claims.fresh_checkpoints(folder, "A")  # the same setup: a killed run resumes
    assert (folder / "student" / "last.pt").read_bytes() == b"A's" and capsys.readouterr().out == ""
    claims.fresh_checkpoints(folder, "B")
    assert not (folder / "student").exists() and (folder / "claims_setup.txt").read_text().strip() == "B"


def test_the_runner_trains_afresh_after_a_code_change_and_reuses_checkpoints_otherwise(tmp_path, monkeypatch):
    data = tmp_path / "claims"
    teacher_dir = data / "06_models/checkpoints/teacher"
    code = {"version": "1"}
    seen = []

    def kedro(args):
        # what the training loop would find to resume, and a run's outputs
        seen.append((sorted(p.name for p in (data / "06_models/checkpoints/seed_0").glob("*/last.pt")) +
                     sorted(p.parent.name for p in teacher_dir.glob("last.pt")), "--pipelines" in args))
        for folder in (data / "06_models/checkpoints/seed_0/student", teacher_dir):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "last.pt").write_bytes(code["version"].encode())
        (data / "06_models/teacher.pt").write_bytes(b"teacher")
        (data / "08_reporting").mkdir(parents=True, exist_ok=True)
        _table(0.5, 0.48, 0.45, 0.47, 0.49, 0.5).to_csv(data / "08_reporting/evaluation_results.csv", index=False)

    monkeypatch.setattr(claims, "_kedro", kedro)
    monkeypatch.setattr(claims, "memory_ratio", lambda env: 4.0)
    monkeypatch.setattr(claims, "_parameters", lambda env: {"paths": {"checkpoints": str(teacher_dir.parent)}})
    monkeypatch.setattr(claims, "fingerprint", lambda env, sections=None, exclude=(): f"{code['version']} {sections} {exclude}")
    monkeypatch.setattr(claims, "_data_dir", lambda env: data)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "claims").mkdir(parents=True)
    argv = ["--seeds", "0"]
    timings = data / "08_reporting/claims/timings.json"
    assert claims.main(argv) == 0
    assert seen[-1] == ([], False)  # the first run: nothing to resume, the whole chain
    assert json.loads(timings.read_text())["0"]["resumed"] == []  # its seconds are the whole seed's
    assert claims.main([*argv, "--rerun"]) == 0
    assert seen[-1] == (["last.pt", "teacher"], True)  # the same setup: the students resume, the teacher is kept
    assert json.loads(timings.read_text())["0"]["resumed"] == ["student"]  # its seconds cover what was left
    code["version"] = "2"  # the source changed
    assert claims.main(argv) == 0
    assert seen[-1] == ([], False)  # neither the teacher nor the students resume what the old code made
    assert json.loads(timings.read_text())["0"]["resumed"] == []
    assert (teacher_dir / "last.pt").read_bytes() == b"2"


def test_the_runner_writes_where_the_environment_puts_its_outputs(tmp_path, monkeypatch, capsys):
    """A copy of conf/claims with its own data_dir gets its own tables, never conf/claims' results."""
    monkeypatch.chdir(tmp_path)
    for env, data_dir in (("base", "data"), ("claims", "data/claims"), ("claims_sampling", "data/claims_sampling")):
        (tmp_path / "conf" / env).mkdir(parents=True)
        (tmp_path / "conf" / env / "globals.yml").write_text(f"data_dir: {data_dir}\n")
    assert claims._data_dir("claims_sampling") == Path("data/claims_sampling")
    assert claims._data_dir("claims") == Path("data/claims")
    monkeypatch.setattr(claims, "fingerprint", lambda env, sections=None, exclude=(): env)
    monkeypatch.setattr(claims, "memory_ratio", lambda env: 4.0)
    for env, gap in (("claims", 0.10), ("claims_sampling", 0.02)):  # explicit attention ahead by 10 or 2 points
        out = tmp_path / claims._data_dir(env) / "08_reporting" / "claims"
        out.mkdir(parents=True)
        _table(0.5, 0.48, 0.45, 0.47, 0.49, 0.5 + gap).to_csv(out / "seed_0.csv", index=False)
        (out / "timings.json").write_text(f'{{"0": {{"fingerprint": "{env}"}}}}')
    assert claims.main(["--env", "claims_sampling", "--seeds", "0", "--report-only"]) == 0
    summary = pd.read_csv(tmp_path / "data/claims_sampling/08_reporting/claims/claims.csv")
    assert summary["gap_mean"].iloc[-1] == pytest.approx(-2.0)  # its own table, not conf/claims' (-10)
    assert not (tmp_path / "data/claims/08_reporting/claims/claims.csv").exists()
    (tmp_path / "conf" / "claims_sampling" / "globals.yml").unlink()  # an environment that keeps base's
    assert claims._data_dir("claims_sampling") == Path("data")
    assert claims.main(["--env", "claim", "--report-only"]) == 2
    assert "--env claim: there is no conf/claim/" in capsys.readouterr().err


@pytest.mark.slow
def test_claims_runner_over_two_seeds(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.helpers import copy_project, run, tiny_parameters, tiny_training

    project = copy_project(tmp_path)
    tiny_parameters(project)
    tiny_training(project)
    claims_conf = project / "conf" / "claims"
    (claims_conf / "parameters_teacher_training.yml").write_text(yaml.safe_dump({"teacher": {"trainer": {"epochs": 1}}}))
    (claims_conf / "parameters_student_training.yml").write_text(yaml.safe_dump(
        {"student": {"variants": ["single", "explicit", "human"], "trainer": {"epochs": 1}}}))
    (claims_conf / "parameters_data_ingestion.yml").write_text(yaml.safe_dump(
        {"data": {"synthetic": {"images": {"train_extra": 4}}}}))
    (claims_conf / "parameters_evaluation.yml").write_text(yaml.safe_dump(
        {"evaluation": {"flip": [False], "scale_sets": [[1.0], [0.5, 1.0, 2.0]], "progress_bar": False}}))
    proc = run([sys.executable, "-m", "hmsa.commands.claims", "--seeds", "3", "4"], project, timeout=1200)
    out = project / "data/claims/08_reporting/claims"
    assert sorted(p.name for p in out.glob("seed_*.csv")) == ["seed_3.csv", "seed_4.csv"]
    summary = pd.read_csv(out / "claims.csv")
    assert len(summary) == len(claims.COMPARISONS) and summary["seeds"].eq(2).all()
    assert summary["gap_mean"].notna().all()  # every model and setting the claims need was evaluated
    assert "training memory explicit / HMSA" in (out / "claims.md").read_text()
    assert "claims over seeds [3, 4]" in proc.stdout
    assert not (project / "data/06_models/teacher.pt").exists()  # the default run's data are untouched
    # seed 3 ran the whole chain, seed 4 the students and evaluation only (the teacher is shared)
    timings = json.loads((out / "timings.json").read_text())
    assert timings["3"]["whole_chain"] and not timings["4"]["whole_chain"]
    assert (project / "data/claims/06_models/checkpoints/seed_4/student-explicit/last.pt").is_file()
    again = subprocess.run([sys.executable, "-m", "hmsa.commands.claims", "--seeds", "3", "4", "--report-only"], cwd=project,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "claims over seeds [3, 4]" in again.stdout
    # seeds already run are kept, not run again
    kept = run([sys.executable, "-m", "hmsa.commands.claims", "--seeds", "3", "4"], project)
    assert "seed 3: kept from an earlier run" in kept.stdout and "kedro run" not in kept.stdout
    # a changed setup (here a parameter of the environment) makes the kept tables stale
    (claims_conf / "parameters_evaluation.yml").write_text(yaml.safe_dump(
        {"evaluation": {"flip": [False], "scale_sets": [[1.0], [0.5, 1.0, 2.0]], "progress_bar": True}}))
    stale = subprocess.run([sys.executable, "-m", "hmsa.commands.claims", "--seeds", "3", "4", "--report-only"], cwd=project,
                           capture_output=True, text=True)
    assert stale.returncode == 1 and "left out seeds [3, 4]" in stale.stderr
    # ... and running it again reruns the students and the evaluation, not the teacher: its own setup is unchanged
    teacher_file = project / "data/claims/06_models/teacher.pt"
    teacher_bytes = teacher_file.read_bytes()
    rerun = run([sys.executable, "-m", "hmsa.commands.claims", "--seeds", "3"], project, timeout=1200)
    assert "seed 3: its table came from another setup" in rerun.stdout
    assert "the teacher and its auto-labels are kept" in rerun.stdout
    assert "--pipelines student_training,evaluation" in rerun.stdout
    assert "training starts afresh" not in rerun.stdout  # an evaluation change reuses the students' checkpoints
    rerun_timing = json.loads((out / "timings.json").read_text())["3"]
    assert not rerun_timing["whole_chain"] and "student-explicit" in rerun_timing["resumed"]
    assert teacher_file.read_bytes() == teacher_bytes


def test_teacher_fingerprint_follows_only_what_the_teacher_reads(tmp_path, monkeypatch):
    import yaml

    from tests.helpers import copy_project

    project = copy_project(tmp_path)
    monkeypatch.chdir(project)

    def change(name: str, section: str, values: dict) -> tuple[str, str]:
        path = project / "conf" / "claims" / name
        params = yaml.safe_load(path.read_text())
        params[section] = {**params[section], **values}
        path.write_text(yaml.safe_dump(params))
        return claims.fingerprint("claims"), claims.fingerprint("claims", claims.TEACHER_SECTIONS)

    before = claims.fingerprint("claims"), claims.fingerprint("claims", claims.TEACHER_SECTIONS)
    after_eval = change("parameters_evaluation.yml", "evaluation", {"flip": [True]})
    assert after_eval[0] != before[0] and after_eval[1] == before[1]
    after_student = change("parameters_student_training.yml", "student", {"variants": ["single"]})
    assert after_student[0] != after_eval[0] and after_student[1] == before[1]
    after_teacher = change("parameters_teacher_training.yml", "teacher", {"registered_model_name": "other"})
    assert after_teacher[0] != after_student[0] and after_teacher[1] != before[1]


def test_git_keeps_the_claims_tables_and_ignores_the_rest_of_the_claims_data():
    """The per-seed tables, the summary and the wall times are small text that git tracks (a fresh
    clone keeps those seeds); the models, checkpoints and other outputs stay DVC's or ignored."""
    from tests.conftest import PROJECT_ROOT

    def ignored(rel: str) -> bool:
        result = subprocess.run(["git", "-C", str(PROJECT_ROOT), "check-ignore", "-q", rel], check=False)
        assert result.returncode in (0, 1), f"git check-ignore failed for {rel}"
        return result.returncode == 0

    for name in ("seed_0.csv", "seed_12.csv", "claims.md", "claims.csv", "timings.json"):
        assert not ignored(f"data/claims/08_reporting/claims/{name}"), name
    for rel in ("data/claims/06_models/student.pt", "data/claims/08_reporting/evaluation_results.csv",
                "data/claims/06_models/checkpoints/seed_0/student/last.pt", "data/other/08_reporting/claims/seed_0.csv"):
        assert ignored(rel), rel


def test_committed_claims_summary_matches_its_seed_tables_and_the_readme():
    """The claims table in git is what its own seed tables give (recomputed here, not copied), and
    the README shows that table: a rerun that changes a seed cannot leave the README's figures behind."""
    from tests.conftest import PROJECT_ROOT

    out = PROJECT_ROOT / "data" / "claims" / "08_reporting" / "claims"
    committed = pd.read_csv(out / "claims.csv")
    seeds = int(committed["seeds"].iloc[0])
    tables = {seed: pd.read_csv(out / f"seed_{seed}.csv") for seed in range(seeds)}
    ratio = float(re.search(r"([0-9.]+)x", committed["note"].dropna().iloc[0]).group(1))
    recomputed = claims.markdown(claims.summarise(tables, memory_ratio=ratio))
    assert (out / "claims.md").read_text().strip() == recomputed
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert recomputed in readme, "README's claims table differs from data/claims/08_reporting/claims/claims.md"
