"""The student_training pipeline: the training template under namespace ``student``, and
under ``student_<baseline>`` for each of the paper's baselines."""

from kedro.pipeline import Pipeline

from hmsa.pipelines._namespaces import MODELS
from hmsa.pipelines._training import training_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Manifests + auto-labels -> student weights, training curve, metrics, registered MLflow
    model; the same for each baseline ``student.variants`` lists (the others yield a
    ``not_trained`` record)."""
    return sum((training_pipeline(name) for name, (block, _) in MODELS.items() if block == "student"), Pipeline([]))
