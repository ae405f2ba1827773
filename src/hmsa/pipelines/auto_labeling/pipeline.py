"""The auto_labeling pipeline."""

from kedro.pipeline import Node, Pipeline

from hmsa.pipelines._namespaces import reading_namespaces

from . import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Teacher + coarse images -> auto-label PNGs, their manifest and class centroids, and the quality report."""
    with reading_namespaces():
        return _pipeline()


def _pipeline() -> Pipeline:
    return Pipeline([
        Node(nodes.label_thresholds, ["params:auto_labeling", "teacher.model", "image_manifest", "raw_data_info"],
             "auto_label_thresholds", name="label_thresholds"),
        Node(nodes.auto_label, ["params:auto_labeling", "teacher.model", "image_manifest", "raw_data_info", "auto_labels_folder",
                                "auto_label_thresholds"],
             ["auto_label_manifest", "auto_labels_info"], name="auto_label"),
        Node(nodes.label_centroids, ["auto_label_manifest", "auto_labels_info", "raw_data_info", "params:data"],
             "auto_label_centroids", name="label_centroids"),
        Node(nodes.label_quality, ["auto_label_manifest", "auto_labels_info", "raw_data_info", "params:auto_labeling"],
             ["auto_label_quality", "auto_label_quality_per_class", "auto_label_threshold_sweep",
              "auto_label_threshold_plot", "auto_labeling_metrics", "auto_labeling_mlflow_metrics"],
             name="label_quality"),
        Node(nodes.label_panels, ["auto_labels", "auto_label_manifest", "raw_data_info", "params:auto_labeling"],
             "auto_label_panels", name="label_panels"),
    ])
