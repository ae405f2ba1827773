"""The teacher_training pipeline: the training template under namespace ``teacher``."""

from kedro.pipeline import Pipeline

from hmsa.pipelines._training import training_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Manifests -> teacher weights, training curve, metrics, registered MLflow model."""
    return training_pipeline("teacher")
