"""Auto-labelling: the teacher turns coarse images into dense, confidence-thresholded labels."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
