"""`python -m hmsa.commands.results`: the mIoU table of the results file the catalog names."""

import pandas as pd

from hmsa.commands import results
from tests.conftest import PROJECT_ROOT


def test_the_results_file_comes_from_each_environments_catalog():
    assert results.results_path(None, PROJECT_ROOT) == PROJECT_ROOT / "data/08_reporting/evaluation_results.csv"
    assert results.results_path("claims", PROJECT_ROOT) == PROJECT_ROOT / "data/claims/08_reporting/evaluation_results.csv"


def test_the_table_is_printed_with_the_best_setting_and_a_missing_file_is_named(tmp_path, capsys):
    table = pd.DataFrame({"model": ["student", "student"], "fusion": ["single", "hierarchical"],
                          "scales": ["1.0", "0.5-1.0-2.0"], "flip": [False, False],
                          "setting": ["single/1.0", "hierarchical/0.5-1.0-2.0"], "miou": [0.5, 0.625]})
    table.to_csv(tmp_path / "r.csv", index=False)
    assert results.main([str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "62.5" in out and "best: student hierarchical/0.5-1.0-2.0 62.5" in out
    assert results.main([str(tmp_path / "none.csv")]) == 1
    assert "no evaluation results at" in capsys.readouterr().err
