"""The student_training pipeline."""

from kedro.pipeline import Pipeline

from hmsa.pipelines._training import training_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Manifests + auto-labels -> student weights, training curve, metrics, registered MLflow model;
    the baselines of ``student.variants`` beside it."""
    return training_pipeline("student", auto_labels=True, variants=True)
