"""Same seed, same CPU: two runs of the default pipeline give the same metrics and the same
model files, tensor for tensor (see docs/reliability.md for what may differ and why)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hmsa.training import checkpoint
from tests.helpers import tiny_project

#: metric keys that measure time, not results
TIMING = ("seconds", "images_per_s")


def _results(value):
    if isinstance(value, dict):
        return {k: _results(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    return value


@pytest.mark.slow
def test_two_runs_of_the_default_pipeline_are_identical(default_run, tmp_path):
    a, b = default_run, tiny_project(tmp_path / "second", "__default__")  # the shared run, and one more

    metrics = sorted(p.relative_to(a) for p in (a / "data/08_reporting/metrics").glob("*.json"))
    assert len(metrics) >= 5
    for path in metrics:
        assert _results(json.loads((a / path).read_text())) == _results(json.loads((b / path).read_text())), path
    assert (a / "data/08_reporting/evaluation_results.csv").read_bytes() == \
        (b / "data/08_reporting/evaluation_results.csv").read_bytes()

    models = sorted(p.relative_to(a) for p in (a / "data/06_models").rglob("*.pt"))
    assert {"teacher.pt", "student.pt", "best.pt", "last.pt"} <= {p.name for p in models}
    for path in models:
        x, y = checkpoint.load(a / path), checkpoint.load(b / path)
        if "not_trained" in x:  # a baseline student.variants does not list
            assert x == y
            continue
        assert x["state_dict"].keys() == y["state_dict"].keys()
        assert all(torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"]), path

    # the records DVC versions name folders relative to the project: the same on every machine
    assert json.loads((a / "data/04_feature/auto_labels_info.json").read_text())["root"] == "data/04_feature/auto_labels"
    labels = sorted(p.relative_to(a) for p in (a / "data/04_feature/auto_labels").rglob("*.png"))
    assert labels
    for path in labels:
        assert np.array_equal(np.asarray(Image.open(a / path)), np.asarray(Image.open(b / path))), path
