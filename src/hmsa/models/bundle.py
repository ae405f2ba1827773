"""A trained model as stored: ``{"model_config": ..., "state_dict": ...}``, and the network it describes."""

from __future__ import annotations

import torch

from hmsa.models.config import ModelConfig
from hmsa.models.segmenter import build_model


class ModelMismatchError(ValueError):
    """A model bundle's weights do not fit the model its configuration describes."""


def model_from_bundle(bundle: dict, source: str = "the model bundle") -> torch.nn.Module:
    """The Segmenter described by a model bundle, weights loaded, in eval mode.

    Weights of another architecture or class count are refused with a message naming
    ``source`` and the first tensors that do not fit.
    """
    try:
        cfg = ModelConfig(**bundle["model_config"])
    except (TypeError, ValueError, KeyError) as err:
        raise ModelMismatchError(f"{source}: its model_config is not a valid model configuration ({err})") from None
    # the bundle's weights replace the trunk's initialisation: do not load ImageNet weights first
    model = build_model(cfg.model_copy(update={"pretrained": "none"}))
    expected, given = model.state_dict(), bundle["state_dict"]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {tuple(given[k].shape)} (this model: {tuple(v.shape)})"
             for k, v in expected.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        problems = [f"{len(wrong)} tensors of another shape, e.g. {wrong[:2]}" if wrong else "",
                    f"{len(missing)} missing, e.g. {missing[:2]}" if missing else "",
                    f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}" if unexpected else ""]
        raise ModelMismatchError(
            f"{source}: the weights do not fit its model ({cfg.trunk}, {cfg.kind}, {cfg.num_classes} classes): "
            + "; ".join(p for p in problems if p)
            + ". Was the file made by another architecture or class count, or edited? Retrain, or give the "
            "bundle that belongs to these weights."
        )
    model.load_state_dict(given)
    return model.eval()
