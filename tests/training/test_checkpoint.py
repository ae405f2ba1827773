"""Checkpoints and model bundles: nothing but tensors is loaded, and wrong files are named."""

import pytest
import torch

from hmsa.models.bundle import ModelMismatchError, model_from_bundle
from hmsa.training import checkpoint


class Payload:
    """Stands for any pickled object: loading it would run code."""


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoint.CheckpointError, match=r"last\.pt: cannot be loaded.*truncated"):
        checkpoint.load(path)


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="pickled Python objects"):
        checkpoint.load(path)


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 7}, "tensors of another shape"),
    ({"kind": "single"}, "unexpected"),
    ({"trunk": "resnet18"}, "missing"),
])
def test_weights_of_another_architecture_or_class_count_are_refused(tiny_model, change, message):
    model = tiny_model("hmsa")
    bundle = {"model_config": {**model.cfg.model_dump(), **change}, "state_dict": model.state_dict()}
    with pytest.raises(ModelMismatchError, match=f"student.pt: the weights do not fit its model.*{message}"):
        model_from_bundle(bundle, "student.pt")


def test_a_matching_bundle_loads_the_same_weights(tiny_model):
    model = tiny_model("hmsa")
    loaded = model_from_bundle({"model_config": model.cfg.model_dump(), "state_dict": model.state_dict()})
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
