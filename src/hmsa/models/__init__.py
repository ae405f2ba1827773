"""Segmentation models in plain torch: trunks, heads, fusion rules, the HMSA model and its baselines."""

from hmsa.models.config import ModelConfig
from hmsa.models.segmenter import Segmenter, build_model

__all__ = ["ModelConfig", "Segmenter", "build_model"]
