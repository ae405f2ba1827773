import json
from pathlib import Path


import pytest
import torch

from hmsa.training import checkpoint
from hmsa.training.data import EvalDataset, TrainDataset
from hmsa.training.loop import EpochLogger, TrainingDivergedError, fingerprint, fit, poly_lambda


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, metrics, step):
        self.calls.append((step, metrics))


def _data(items, trainer):
    return TrainDataset(items["train"], trainer.crop), EvalDataset(items["val"])


def test_fit_writes_checkpoints_and_logs_each_epoch(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    log = Recorder()
    result = fit(model_cfg, trainer, *_data(items, trainer), log_fn=log)
    assert len(result.history) == 2 and [r["epoch"] for r in result.history] == [1, 2]
    assert [step for step, _ in log.calls] == [1, 2]
    assert {"train/loss", "train/loss_main", "train/loss_aux", "train/loss_scales", "train/lr", "val/mIoU"} <= set(log.calls[0][1])
    ckpt = trainer.checkpoint_dir
    assert checkpoint.load(f"{ckpt}/last.pt")["epoch"] == 1
    best = checkpoint.load(f"{ckpt}/best.pt")
    assert best["best_epoch"] == result.best_epoch and set(best["state_dict"]) == set(result.state_dict)
    # the poly schedule reached zero at the last iteration
    assert result.history[-1]["lr"] == pytest.approx(0.0)


def test_keep_last_yields_the_last_epoch_not_the_best(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    trainer = trainer.model_copy(update={"epochs": 3, "keep": "last"})
    result = fit(model_cfg, trainer, *_data(items, trainer))
    last = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")["state_dict"]
    assert result.kept_epoch == 3
    assert all(torch.equal(result.state_dict[k], v) for k, v in last.items())
    # the best epoch is still reported; with keep=best its weights are the ones returned
    best = fit(model_cfg, trainer.model_copy(update={"keep": "best"}), *_data(items, trainer))
    assert best.kept_epoch == best.best_epoch == result.best_epoch
    stored = checkpoint.load(f"{trainer.checkpoint_dir}/best.pt")["state_dict"]
    assert all(torch.equal(best.state_dict[k], v) for k, v in stored.items())
    if result.best_epoch != 3:
        assert any(not torch.equal(best.state_dict[k], v) for k, v in last.items())


@pytest.mark.parametrize("kind", ["single", "explicit"])
def test_every_model_kind_trains_and_validates(tiny_setup, kind):
    items, model_cfg, trainer = tiny_setup
    model_cfg = model_cfg.model_copy(update={"kind": kind})
    result = fit(model_cfg, trainer.model_copy(update={"epochs": 1}), *_data(items, trainer))
    assert 0.0 <= result.history[0]["val_miou"] <= 1.0  # explicit attention validates on its own scales
    assert result.model_config["kind"] == kind


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_on_the_cpu_runs_the_forward_in_bf16_and_keeps_fp32_weights(tiny_setup, monkeypatch, precision, dtype):
    from hmsa.training import loop

    seen, build = set(), loop.build_model

    def build_and_watch(cfg):
        model = build(cfg)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda mod, args, out: seen.add((torch.is_grad_enabled(), out.dtype)))
        return model

    monkeypatch.setattr(loop, "build_model", build_and_watch)
    items, model_cfg, trainer = tiny_setup
    result = fit(model_cfg, trainer.model_copy(update={"epochs": 1, "precision": precision}), *_data(items, trainer))
    assert (True, dtype) in seen  # training steps (grad on) ran the convolutions in `dtype`
    assert all(v.dtype == torch.float32 for v in result.state_dict.values() if v.is_floating_point())
    assert 0.0 <= result.history[0]["val_miou"] <= 1.0


def test_recompute_loss_trains_the_same_weights_and_auto_keeps_the_tensors_on_the_cpu(tiny_setup, tmp_path, monkeypatch):
    from hmsa.training import loop

    made = []
    real = loop.SegmentationLoss

    def record(*args, **kwargs):
        made.append(kwargs.get("recompute"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "SegmentationLoss", record)
    items, model_cfg, trainer = tiny_setup
    runs = {}
    for choice in ("on", "off", "auto"):
        cfg = trainer.model_copy(update={"epochs": 1, "recompute_loss": choice, "checkpoint_dir": str(tmp_path / choice)})
        runs[choice] = fit(model_cfg, cfg, *_data(items, cfg)).state_dict
    assert made == [True, False, False]  # auto: recomputed on CUDA only
    assert loop.recomputes_loss(trainer.model_copy(update={"recompute_loss": "auto"}), torch.device("cuda"))
    # the same weights to the last bit, whichever way the loss is computed
    assert all(torch.equal(runs["on"][k], runs["off"][k]) for k in runs["on"])
    # and a checkpoint written one way resumes the other way (the setting changes no number)
    assert fingerprint(model_cfg, trainer.model_copy(update={"recompute_loss": "on"})) == fingerprint(
        model_cfg, trainer.model_copy(update={"recompute_loss": "off"}))


def test_fp16_on_the_cpu_is_refused_before_anything_is_written(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    with pytest.raises(ValueError, match="on the CPU set trainer.precision"):
        fit(model_cfg, trainer.model_copy(update={"precision": "fp16"}), *_data(items, trainer))
    assert not any(Path(trainer.checkpoint_dir).glob("*.pt"))


class Crash(Exception):
    pass


def crash_after_epoch_one(metrics, step):
    if step == 1:
        raise Crash  # after epoch 1's checkpoint was written, as a kill would


def test_resume_continues_from_the_last_epoch(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    trainer = trainer.model_copy(update={"epochs": 3})
    with pytest.raises(Crash):
        fit(model_cfg, trainer, *_data(items, trainer), log_fn=crash_after_epoch_one)
    crashed = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    assert crashed["epoch"] == 0
    log = Recorder()
    resumed = fit(model_cfg, trainer, *_data(items, trainer), log_fn=log)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == json.loads(crashed["history"])[0]
    assert [step for step, _ in log.calls] == [1, 2, 3]  # the resumed run's log holds the whole curve
    # other training data: not resumed
    done = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    assert done["fingerprint"] == fingerprint(model_cfg, trainer) and done["epoch"] == 2
    fresh = fit(model_cfg, trainer, *_data(items, trainer), data_key="other data")
    assert len(fresh.history) == 3
    assert checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")["fingerprint"] == fingerprint(model_cfg, trainer, "other data")


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tiny_setup, tmp_path):
    items, model_cfg, trainer = tiny_setup
    trainer = trainer.model_copy(update={"epochs": 3})
    whole = trainer.model_copy(update={"checkpoint_dir": str(tmp_path / "whole")})
    fit(model_cfg, whole, *_data(items, whole))
    with pytest.raises(Crash):
        fit(model_cfg, trainer, *_data(items, trainer), log_fn=crash_after_epoch_one)
    resumed = fit(model_cfg, trainer, *_data(items, trainer))
    a, b = checkpoint.load(tmp_path / "whole" / "last.pt"), checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [r["loss"] for r in json.loads(a["history"])] == [r["loss"] for r in resumed.history]


def test_resume_needs_the_same_setup(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    fit(model_cfg, trainer, *_data(items, trainer))
    other = trainer.model_copy(update={"lr": 0.02})
    assert fingerprint(model_cfg, other) != fingerprint(model_cfg, trainer)
    assert fingerprint(model_cfg, trainer.model_copy(update={"num_workers": 3})) == fingerprint(model_cfg, trainer)
    assert fingerprint(model_cfg, trainer, "data-v2") != fingerprint(model_cfg, trainer, "data-v1")
    fresh = fit(model_cfg, other, *_data(items, trainer))
    assert [r["epoch"] for r in fresh.history] == [1, 2]


def test_divergence_stops_with_a_clear_error_and_keeps_the_checkpoint(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    fit(model_cfg, trainer.model_copy(update={"epochs": 1}), *_data(items, trainer))
    before = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    with pytest.raises(TrainingDivergedError, match="lower trainer.lr"):
        fit(model_cfg, trainer.model_copy(update={"lr": 1e12, "epochs": 4}), *_data(items, trainer))
    after = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    assert after["epoch"] == before["epoch"]
    assert all(torch.equal(after["state_dict"][k], before["state_dict"][k]) for k in before["state_dict"])


def test_poly_schedule():
    f = poly_lambda(10, 2.0)
    assert f(0) == 1.0 and f(5) == pytest.approx(0.25) and f(10) == 0.0 and f(12) == 0.0


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    checkpoint.save_atomic({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save_atomic({"a": Boom()}, path)
    assert torch.equal(checkpoint.load(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_aux_loss_size_reaches_the_loss_and_the_checkpoint_fingerprint(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    trainer = trainer.model_copy(update={"epochs": 1, "crop": (32, 64)})
    logits = trainer.model_copy(update={"aux_loss_size": "logits", "checkpoint_dir": trainer.checkpoint_dir + "-logits"})
    paper, cheap = fit(model_cfg, trainer, *_data(items, trainer)), fit(model_cfg, logits, *_data(items, logits))
    # the same data and seed: the aux term is scored at another size, so its value differs
    assert paper.history[0]["loss_aux"] != cheap.history[0]["loss_aux"]
    assert fingerprint(model_cfg, trainer) != fingerprint(model_cfg, logits)  # a checkpoint of one does not resume the other


class RunLogger(Recorder):
    """An ``EpochLogger``: it names its run, and hears which run a resumed training continues."""

    def __init__(self, run_id, crash_at=None):
        super().__init__()
        self.run_id, self.crash_at, self.continues = run_id, crash_at, "not told"

    def __call__(self, metrics, step):
        super().__call__(metrics, step)
        if step == self.crash_at:
            raise Crash

    def resumed(self, previous_run_id):
        self.continues = previous_run_id


def test_the_logger_protocol_links_a_resumed_run_and_both_checkpoints_share_one_format(tiny_setup):
    items, model_cfg, trainer = tiny_setup
    assert isinstance(RunLogger("a"), EpochLogger) and not isinstance(crash_after_epoch_one, EpochLogger)
    with pytest.raises(Crash):
        fit(model_cfg, trainer, *_data(items, trainer), log_fn=RunLogger("first", crash_at=1))
    last = checkpoint.load(f"{trainer.checkpoint_dir}/last.pt")
    assert last["mlflow_run_id"] == "first"
    second = RunLogger("second")
    fit(model_cfg, trainer, *_data(items, trainer), log_fn=second)
    assert second.continues == "first" and [step for step, _ in second.calls] == [1, 2]
    best, last = (checkpoint.load(f"{trainer.checkpoint_dir}/{name}.pt") for name in ("best", "last"))
    shared = {"model_config", "state_dict", "best_miou", "best_epoch", "epoch"}
    assert shared <= set(best) and shared <= set(last) and best["state_dict"].keys() == last["state_dict"].keys()
    # a last.pt in the earlier format (weights under "model") is not resumed: training starts afresh
    old = dict(last)
    old["model"] = old.pop("state_dict")
    checkpoint.save_atomic(old, f"{trainer.checkpoint_dir}/last.pt")
    third = RunLogger("third")
    fit(model_cfg, trainer, *_data(items, trainer), log_fn=third)
    assert third.continues == "not told" and [step for step, _ in third.calls] == [1, 2]
