"""MLflow and DVC around the library: run tracking and the model registry, the served
model, provenance (git commit, raw-data hash) and the team's DVC remote."""
