"""The MLflow pyfunc model: a trained Segmenter that predicts label maps on numpy images.

Input: one image (H, W, 3) or a batch (N, H, W, 3) of uint8 RGB. Output: trainId label
maps, (H, W) or (N, H, W) uint8. Parameters at predict time: ``scales`` (must contain
1.0), ``flip`` and ``fusion`` (empty = the model's own rule).
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import torch

from hmsa.models import ModelConfig, build_model


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


def predict_labels(model: torch.nn.Module, images: np.ndarray, scales=(1.0,), flip: bool = False,
                   fusion: str | None = None) -> np.ndarray:
    """trainId label maps for uint8 RGB images (H, W, 3) or (N, H, W, 3)."""
    array = np.asarray(images)
    single = array.ndim == 3
    if single:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or a batch (N, H, W, 3), got shape {array.shape}")
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255).to(device)
    logits = model.predict(x, scales=scales, flip=flip, fusion_rule=fusion or None)["logits"]
    labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return labels[0] if single else labels


class SegmenterPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper; the bundle file is the artifact ``bundle``."""

    def load_context(self, context) -> None:
        from hmsa.training import checkpoint

        self.model = model_from_bundle(checkpoint.load(context.artifacts["bundle"]))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        # an ndarray hint: MLflow does no type-hint validation (the signature does it) and
        # does not warn about missing hints on every load
        params = params or {}
        return predict_labels(self.model, model_input, tuple(params.get("scales") or (1.0,)),
                              bool(params.get("flip", False)), params.get("fusion") or None)
