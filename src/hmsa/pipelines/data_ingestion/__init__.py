"""Data ingestion: generate or locate the raw tree, check it, index it, report on it."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
