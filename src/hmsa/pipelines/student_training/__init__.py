"""Student training: the HMSA student on fine + coarse data, logged and registered in MLflow."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
