"""The MLflow pyfunc model: a trained Segmenter that predicts label maps on numpy images.

Input: one image (H, W, 3) or a batch (N, H, W, 3) of RGB values 0..255 (uint8, or
integers; floats are refused). Output: trainId label maps, (H, W) or (N, H, W) uint8.
Parameters at predict time: ``scales`` (must contain 1.0), ``flip`` and ``fusion`` (empty =
the model's own rule). Bad input is a 400 that says what to change; the limits of
``ServingLimits`` are checked before any work.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from pydantic import BaseModel, ConfigDict, Field

from hmsa.models.bundle import model_from_bundle
from hmsa.models.fusion import DEFAULT_MAX_SCALE, check_scales
from hmsa.models.segmenter import NonFiniteOutputError, require_finite


class ServingLimits(BaseModel):
    """What one request to the served model may ask for, checked before any work (logged with
    the model as its MLflow model_config; set by ``<role>.serving`` in the parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: pixels per image (height x width); 2048 x 2048 by default
    max_image_pixels: int = Field(2048 * 2048, ge=1)
    #: the largest inference scale (memory grows with its square)
    max_scale: float = Field(DEFAULT_MAX_SCALE, ge=1.0)
    #: request body size for ``hmsa serve`` (refused before it is read); 64 MB holds a
    #: 2048 x 2048 image as JSON
    max_request_bytes: int = Field(64 * 2**20, ge=1)


def as_uint8_images(images) -> np.ndarray:
    """``images`` as uint8 RGB, (H, W, 3) or (N, H, W, 3); integers must be 0..255, and floats
    are refused (a [0, 1] image cast to uint8 would be all black)."""
    array = np.asarray(images)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or a batch (N, H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.size and np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating):
        low, high = array.min(), array.max()
        if np.issubdtype(array.dtype, np.integer):
            if low >= 0 and high <= 255:
                return array.astype(np.uint8)
            raise ValueError(f"pixel values must be 0..255 (uint8 RGB), got {array.dtype} values in [{low}, {high}]")
        hint = " (an image scaled to [0, 1]: multiply by 255 and round)" if high <= 1.0 else ""
        raise ValueError(f"pixel values must be integers 0..255 (uint8 RGB), got floating-point values in "
                         f"[{low:g}, {high:g}]{hint}")
    raise ValueError(f"pixel values must be integers 0..255 (uint8 RGB), got {array.dtype}")


def predict_labels(model: torch.nn.Module, images: np.ndarray, scales=(1.0,), flip: bool = False,
                   fusion: str | None = None, limits: ServingLimits | None = None) -> np.ndarray:
    """trainId label maps for uint8 RGB images (H, W, 3) or (N, H, W, 3); images, scales and
    fusion are checked against ``limits`` and the model before any work (ValueError)."""
    limits = limits or ServingLimits()
    array = as_uint8_images(images)
    single = array.ndim == 3
    if single:
        array = array[None]
    height, width = array.shape[1:3]
    if height * width > limits.max_image_pixels:
        raise ValueError(f"images of {height} x {width} = {height * width:,} pixels are over this model's "
                         f"serving.max_image_pixels ({limits.max_image_pixels:,}); send smaller images, or retrain "
                         "with a larger <role>.serving.max_image_pixels")
    scales = check_scales(scales, limits.max_scale, "serving.max_scale")
    if len(scales) > 1 and fusion:
        model.check_fusion(fusion, scales)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255).to(device)
    logits = model.predict(x, scales=scales, flip=flip, fusion_rule=fusion or None)["logits"]
    require_finite(logits, "the served model")
    labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return labels[0] if single else labels


class SegmenterPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper; the bundle file is the artifact ``bundle``, the limits its model_config."""

    def load_context(self, context) -> None:
        from hmsa.training import checkpoint

        self.model = model_from_bundle(checkpoint.load(context.artifacts["bundle"]))
        self.limits = ServingLimits(**(context.model_config or {}))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        # an ndarray hint: MLflow does no type-hint validation (the signature does it) and
        # does not warn about missing hints on every load
        params = params or {}
        try:
            return predict_labels(self.model, model_input, tuple(params.get("scales") or (1.0,)),
                                  bool(params.get("flip", False)), params.get("fusion") or None, self.limits)
        except NonFiniteOutputError as err:  # the model's fault: a server error, said plainly
            raise MlflowException(str(err), error_code=INTERNAL_ERROR) from None
        except ValueError as err:  # the request's fault: a 400 that says what to change
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
