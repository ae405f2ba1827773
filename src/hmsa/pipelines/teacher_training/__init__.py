"""Teacher training: the HMSA teacher on fine + coarse data, logged and registered in MLflow."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
