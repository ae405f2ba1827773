"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from hmsa.pipelines._namespaces import MODELS as TRAINED
from hmsa.pipelines._namespaces import reading_namespaces

from . import nodes

#: each trained model's weights and registry record, by the name the results table gives it
MODELS = {name: f"{name}.model" for name in TRAINED}
REGISTRIES = {name: f"{name}.registry" for name in TRAINED}
DATA = {"image_manifest": "image_manifest", "raw_data_info": "raw_data_info"}


def create_pipeline(**kwargs) -> Pipeline:
    """Trained models + val split -> results table, metrics, pictures, Cityscapes-format
    predictions, and the registry alias ``champion``."""
    params = {"params": "params:evaluation"}
    with reading_namespaces():
        return _pipeline(params)


def _pipeline(params: dict) -> Pipeline:
    return Pipeline([
        Node(nodes.evaluate, params | DATA | MODELS, ["evaluation_results", "evaluation_confusions"], name="evaluate"),
        Node(nodes.report, "evaluation_results",
             ["evaluation_metrics", "evaluation_mlflow_metrics", "evaluation_per_class"], name="evaluation_report"),
        Node(nodes.fusion_plot, "evaluation_results", "evaluation_fusion_plot", name="fusion_plot"),
        Node(nodes.confusion_plot, ["evaluation_results", "evaluation_confusions"], "evaluation_confusion_plot",
             name="confusion_plot"),
        Node(nodes.prediction_pictures, params | {"results": "evaluation_results"} | DATA | MODELS,
             ["evaluation_attention_maps", "evaluation_overlays"], name="prediction_pictures"),
        Node(nodes.cityscapes_predictions, params | {"results": "evaluation_results"} | DATA | MODELS,
             "cityscapes_results", name="cityscapes_predictions"),
        Node(nodes.set_champions, params | {"results": "evaluation_results"} | REGISTRIES, "evaluation_champions",
             name="set_champions"),
    ])
