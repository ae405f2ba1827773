"""The evaluation pipeline: every trained model over scale sets, fusion rules and flip."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
