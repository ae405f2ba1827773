"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from . import nodes

MODELS = ["teacher_model", "student_model", "student_variants"]
DATA = ["image_manifest", "raw_data_info"]


def create_pipeline(**kwargs) -> Pipeline:
    """Trained models + val split -> results table, metrics, pictures, Cityscapes-format
    predictions, and the registry alias ``champion``."""
    return Pipeline([
        Node(nodes.evaluate, ["params:evaluation", *MODELS, *DATA], ["evaluation_results", "evaluation_confusions"],
             name="evaluate"),
        Node(nodes.report, "evaluation_results",
             ["evaluation_metrics", "evaluation_mlflow_metrics", "evaluation_per_class"], name="evaluation_report"),
        Node(nodes.fusion_plot, "evaluation_results", "evaluation_fusion_plot", name="fusion_plot"),
        Node(nodes.confusion_plot, ["evaluation_results", "evaluation_confusions"], "evaluation_confusion_plot",
             name="confusion_plot"),
        Node(nodes.prediction_pictures, ["params:evaluation", "evaluation_results", *MODELS, *DATA],
             ["evaluation_attention_maps", "evaluation_overlays"], name="prediction_pictures"),
        Node(nodes.cityscapes_predictions, ["params:evaluation", "evaluation_results", *MODELS, *DATA],
             "cityscapes_results", name="cityscapes_predictions"),
        Node(nodes.set_champions, ["params:evaluation", "evaluation_results", "teacher_registry", "student_registry",
                                   "student_variants_registry"], "evaluation_champions", name="set_champions"),
    ])
