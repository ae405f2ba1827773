"""Kedro pipelines: thin nodes that load from the catalog, call the library, and return."""
