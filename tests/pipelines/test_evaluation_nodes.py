"""The evaluation pipeline's nodes on the tiny tree, and the official Cityscapes evaluation."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from hmsa.project.config import ParameterError
from hmsa.data import cityscapes
from hmsa.data.labels import CITYSCAPES
from hmsa.project.datasets import PngFolderDataset
from hmsa.evaluation.report import summary_table
from hmsa.models import ModelConfig, build_model
from hmsa.pipelines.evaluation import nodes
from tests.conftest import TINY_SPLITS
from tests.models.conftest import TINY

PARAMS = {"scale_sets": [[1.0], [0.5, 1.0], [0.5, 1.0, 2.0]], "flip": [False, True], "batch_size": 2,
          "device": "cpu", "pictures": 2, "progress_bar": False}


def _bundle(kind: str, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind=kind, **TINY))
    return {"model_config": model.cfg.model_dump(), "state_dict": model.state_dict()}


@pytest.fixture(scope="module")
def inputs(tiny_tree_master):
    index = cityscapes.index_tree(tiny_tree_master, TINY_SPLITS)
    manifest = pd.DataFrame([vars(e) for e in index.entries])
    # as the catalog gives them: a baseline that student.variants did not ask for is a not_trained record
    models = {"teacher": _bundle("hmsa", 0), "student": _bundle("hmsa", 1), "student_explicit": _bundle("explicit", 2),
              "student_single": _bundle("single", 3), "student_human": {"not_trained": "not in student.variants"}}
    return {**models, "image_manifest": manifest, "raw_data_info": {"root": str(tiny_tree_master)}}


@pytest.fixture(scope="module")
def evaluated(inputs):
    return nodes.evaluate(PARAMS, **inputs)


def test_table_has_every_model_and_only_applicable_rules(evaluated):
    results, confusions = evaluated
    assert list(results["model"].unique()) == ["teacher", "student", "student_single", "student_explicit"]
    by_model = results.groupby("model")["fusion"].agg(set)
    assert by_model["student"] == {"single", "hierarchical", "average", "max"}
    assert by_model["student_single"] == {"single", "average", "max"}
    assert by_model["student_explicit"] == {"single", "explicit", "average", "max"}
    explicit = results[results["fusion"] == "explicit"]
    assert set(explicit["scales"]) == {"0.5-1.0-2.0"} and set(explicit["flip"]) == {False, True}
    assert results["images"].eq(2).all()
    assert set(confusions) == set(results["model"])
    for model, entry in confusions.items():
        best = results[results["model"] == model]["miou"].max()
        rows = results[(results["model"] == model) & (results["setting"] == entry["setting"])]
        assert rows["miou"].iloc[0] == best


def test_metrics_for_dvc_and_mlflow(evaluated):
    results, _ = evaluated
    metrics, mlflow_metrics, per_class = nodes.report(results)
    best = results.loc[results["miou"].idxmax()]
    assert metrics["best"] == {"model": best["model"], "setting": best["setting"], "miou": round(best["miou"], 6)}
    value = results.query("model == 'student' and setting == 'hierarchical/0.5-1.0-2.0'")["miou"].iloc[0]
    # the headline: per model, 1.0 and its own fusion on [0.5, 1, 2], and its best setting
    assert sorted(metrics) == sorted(["best", *results["model"].unique()])
    assert metrics["student"]["miou_multiscale"] == round(value, 6)
    assert metrics["student_explicit"]["miou_multiscale"] == round(
        results.query("model == 'student_explicit' and setting == 'explicit/0.5-1.0-2.0'")["miou"].iloc[0], 6)
    assert metrics["student_single"]["miou_multiscale"] == round(
        results.query("model == 'student_single' and setting == 'average/0.5-1.0-2.0'")["miou"].iloc[0], 6)
    for model, rows in results.groupby("model"):
        assert metrics[model]["miou_1x"] == round(rows.query("setting == 'single/1.0'")["miou"].iloc[0], 6)
        assert metrics[model]["best_setting"] == rows.loc[rows["miou"].idxmax(), "setting"]
    assert sum(len(v) for v in metrics.values()) <= 4 * results["model"].nunique() + 3  # fits a screen
    assert mlflow_metrics["mIoU/student/hierarchical/0.5-1.0-2.0"] == {"value": value, "step": 0}
    assert "mIoU/student/hierarchical/0.5-1.0-2.0/flip" in mlflow_metrics
    assert all(math.isfinite(m["value"]) for m in mlflow_metrics.values())
    assert set(per_class["class"]) <= set(CITYSCAPES.class_names) and per_class["iou"].between(0, 1).all()
    table = summary_table(results)
    assert "hierarchical" in table and "0.5-1.0-2.0" in table


def test_pictures(evaluated, inputs):
    results, confusions = evaluated
    assert isinstance(nodes.fusion_plot(results), Figure)
    assert isinstance(nodes.confusion_plot(results, confusions), Figure)
    attention, overlays = nodes.prediction_pictures(PARAMS, results, **inputs)
    hier = results[results["fusion"] == "hierarchical"]
    scales = hier.loc[hier["miou"].idxmax(), "scales"].split("-")
    # 2 images x (image, prediction, the attention of each scale but the highest)
    assert len(attention.axes) == 2 * (2 + len(scales) - 1)
    assert [ax.get_title() for ax in attention.axes[2:2 + len(scales) - 1]] == [
        f"attention of scale {float(s):g}" for s in scales[:-1]]
    assert len(overlays.axes) == 2 * 3


def test_cityscapes_format_scores_the_same_with_the_official_evaluation(evaluated, inputs, tmp_path, monkeypatch):
    results, _ = evaluated
    predictions = nodes.cityscapes_predictions(PARAMS, results, **inputs)
    assert sorted(predictions) == sorted(f"gamma/{e}_pred_labelIds" for e in
                                         inputs["image_manifest"].query("split == 'val'")["image_id"])
    folder = tmp_path / "results"
    PngFolderDataset(str(folder)).save(predictions)
    saved = PngFolderDataset(str(folder)).load()
    some = next(iter(saved.values()))()
    assert some.dtype == np.uint8 and CITYSCAPES.train_ids(some).max() < 19  # label ids of training classes

    monkeypatch.setattr(np, "in1d", np.isin, raising=False)  # removed in numpy 2.4; see STACK.md
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    monkeypatch.setattr(args, "predictionPath", str(folder))
    monkeypatch.setattr(args, "predictionWalk", None)
    for name, value in (("evalInstLevelScore", False), ("evalPixelAccuracy", False), ("JSONOutput", False),
                        ("quiet", True)):
        monkeypatch.setattr(args, name, value)
    root = inputs["raw_data_info"]["root"]
    truths = sorted(str(p) for p in Path(root).glob("gtFine/val/*/*_gtFine_labelIds.png"))
    assert len(truths) == 2
    scores = official.evaluateImgLists([official.getPrediction(args, t) for t in truths], truths, args)

    best = results.loc[results["miou"].idxmax()]
    assert scores["averageScoreClasses"] == pytest.approx(best["miou"], abs=1e-9)
    for name in CITYSCAPES.class_names:
        ours, theirs = best[f"iou/{name}"], scores["classScores"][name]
        assert (np.isnan(ours) and np.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-9), name


def test_missing_baseline_names_the_parameter_to_set(inputs):
    with pytest.raises(ValueError, match="student.variants"):
        nodes.evaluate({**PARAMS, "models": ["student", "student_human"]}, **inputs)


@pytest.mark.parametrize("bad, key", [({"scale_sets": [[0.5, 2.0]]}, "1.0 must be in the list"),
                                      ({"scale_sets": [[0.0, 1.0]]}, "must be > 0"),
                                      ({"fusions": ["mean"]}, "evaluation.fusions"),
                                      ({"flips": [True]}, "unknown parameter")])
def test_bad_parameters_name_the_key(inputs, bad, key):
    with pytest.raises(ParameterError, match=key):
        nodes.evaluate({**PARAMS, **bad}, **inputs)


def test_the_evaluation_pipeline_runs_sliced_on_an_in_memory_catalog(inputs):
    """As spaceflights tests its pipelines: the registered evaluation pipeline up to its report,
    by Kedro's runner on MemoryDatasets; the models come in under their namespaces' names."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from hmsa.pipelines.evaluation.pipeline import create_pipeline

    pipe = create_pipeline().to_nodes("evaluation_report")
    data = {f"{name}.model": bundle for name, bundle in inputs.items() if name not in ("image_manifest", "raw_data_info")}
    data |= {"image_manifest": inputs["image_manifest"], "raw_data_info": inputs["raw_data_info"],
             "params:evaluation": PARAMS}
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in data.items()})
    free = SequentialRunner().run(pipe, catalog)
    free = {name: (value.load() if hasattr(value, "load") else value) for name, value in free.items()}
    assert {n.name for n in pipe.nodes} == {"evaluate", "evaluation_report"}
    metrics = free["evaluation_metrics"]
    assert sorted(metrics) == ["best", "student", "student_explicit", "student_single", "teacher"]  # no student_human
    assert metrics["best"]["miou"] == max(m["best_miou"] for k, m in metrics.items() if k != "best")
    assert set(free["evaluation_per_class"]["class"]) <= set(CITYSCAPES.class_names)
