"""Evaluation: confusion matrices and IoU (used by training's validation and by the evaluation pipeline)."""
