"""docs/reliability.md names a test for every behaviour it promises: each must exist."""

import ast
import re

from tests.conftest import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "reliability.md"


def _defined(path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_test_the_reliability_page_names_exists():
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DOC.read_text())
    assert len(refs) >= 30
    missing = [f"{path}::{name}" for path, name in refs
               if not (PROJECT_ROOT / path).is_file() or name not in _defined(PROJECT_ROOT / path)]
    assert missing == []


def test_the_bad_input_table_has_at_least_fifteen_cases_each_with_a_test():
    text = DOC.read_text().split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 15
    assert all("`tests/" in row for row in rows)


def test_the_readme_headline_table_is_the_committed_metrics_file():
    """The default run's table in the README says what evaluation.json (in dvc.lock) says."""
    import json

    text = (PROJECT_ROOT / "README.md").read_text()
    marker = "<!-- headline: data/08_reporting/metrics/evaluation.json -->"
    assert marker in text
    table = text.split(marker, 1)[1].strip().split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    metrics = json.loads((PROJECT_ROOT / "data/08_reporting/metrics/evaluation.json").read_text())
    assert len(rows) == len(metrics) - 1  # one row per model
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        figures = metrics[cells[0].split()[0]]
        points = [f"{100 * figures[key]:.1f}" for key in ("miou_1x", "miou_multiscale", "best_miou")]
        assert cells[1:] == [points[0], points[1], f"{points[2]} ({figures['best_setting']})"], row
