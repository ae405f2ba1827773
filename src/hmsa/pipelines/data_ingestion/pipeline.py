"""The data_ingestion pipeline."""

from kedro.pipeline import Node, Pipeline

from . import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Raw tree -> checked manifests, class statistics and the data report."""
    return Pipeline([
        # raw_data_candidate stays in memory: raw_data_info (which later stages read the root
        # from) is written only once the tree has passed its checks, with the manifest
        Node(nodes.prepare_raw_data, ["params:data", "params:paths"], "raw_data_candidate", name="prepare_raw_data"),
        Node(
            nodes.ingest_raw_data,
            ["raw_data_candidate", "params:data"],
            ["image_manifest", "class_pixel_counts", "class_centroids", "skipped_files", "raw_data_info"],
            name="ingest_raw_data",
        ),
        Node(nodes.class_frequency, "class_pixel_counts", "class_frequency", name="class_frequency"),
        Node(nodes.plot_class_frequency, "class_frequency", "class_frequency_plot", name="plot_class_frequency"),
        Node(
            nodes.ingestion_metrics,
            ["image_manifest", "skipped_files", "class_frequency"],
            ["data_ingestion_metrics", "data_ingestion_mlflow_metrics"],
            name="ingestion_metrics",
        ),
    ])
