import json
import os

import numpy as np

from hmsa.training import run


class FileLog:
    """A picklable log_fn that records which process called it."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self, metrics, step):
        with open(self.path, "a") as f:
            f.write(json.dumps({"rank": os.environ.get("RANK"), "step": step, "keys": sorted(metrics)}) + "\n")


def test_two_cpu_processes_on_gloo_log_from_rank_zero_only(tiny_setup, tmp_path):
    items, model_cfg, trainer = tiny_setup
    trainer = trainer.model_copy(update={"devices": 2})
    data = run.TrainData(items["train"], items["val"], np.ones(19))
    result = run.train(model_cfg, trainer, data, FileLog(tmp_path / "log.jsonl"))
    calls = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [c["step"] for c in calls] == [1, 2]
    assert {c["rank"] for c in calls} == {"0"}
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    assert len(result.history) == 2 and result.state_dict
