"""The real-data Kedro environments, cityscapes and mapillary, end to end on tiny trees."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from hmsa.data.synthetic import SynthCitySpec, generate
from tests.helpers import copy_project, mapillary_tree, run

#: the CPU smoke overrides: HRNetV2-W18-small + narrow OCR, 2 iterations of 64x128 crops
SMOKE_MODEL = {"trunk": "hrnet_w18_small", "ocr_mid_channels": 16, "ocr_key_channels": 8, "attn_channels": 8}
SMOKE_TRAINER = {"max_iterations": 2, "epochs": 1, "batch_size": 2, "crop": [64, 128], "num_workers": 0,
                 "val_batch_size": 2, "progress_bar": False}


def _tree(path):
    """A Cityscapes tree (leftImg8bit/, gtFine/, gtCoarse/) of 64x128 images."""
    spec = SynthCitySpec(seed=3, height=64, width=128, images={"train": 4, "val": 2, "train_extra": 4},
                         cities={"train": ["aa", "bb"], "val": ["cc"], "train_extra": ["dd"]})
    generate(path, spec, workers=1)
    return path


@pytest.mark.slow
def test_cityscapes_environment_runs_the_paper_recipe_end_to_end(tmp_path):
    project = copy_project(tmp_path / "project")
    root = _tree(tmp_path / "cityscapes")
    smoke = {"run": {"env": "cityscapes", "params": {
        "teacher": {"model": SMOKE_MODEL, "trainer": SMOKE_TRAINER},
        "student": {"model": SMOKE_MODEL, "trainer": SMOKE_TRAINER},
        "auto_labeling": {"batch_size": 2, "readers": 0, "progress_bar": False},
        "evaluation": {"progress_bar": False},
    }}}
    (project / "smoke.yml").write_text(yaml.safe_dump(smoke))
    run(["kedro", "run", "--config", "smoke.yml"], project, timeout=1500,
        env={"CITYSCAPES_DATASET": str(root), "HRNET_W48_WEIGHTS": "none"})

    out = project / "data" / "cityscapes"
    assert json.loads((out / "03_primary/raw_data_info.json").read_text())["root"] == str(root)
    for role in ("teacher", "student"):
        model = torch.load(out / f"06_models/{role}.pt", map_location="cpu", weights_only=True)["model_config"]
        assert (model["trunk"], model["head"], model["output_stride"]) == ("hrnet_w18_small", "ocr", 4)
    # the run's parameters in MLflow: the environment's recipe under the smoke overrides
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    params = client.search_runs([client.get_experiment_by_name("hmsa").experiment_id])[0].data.params
    assert params["data.cityscapes_root"] == str(root)
    for role in ("teacher", "student"):
        assert params[f"{role}.trainer.sampling"] == "class_uniform" and params[f"{role}.trainer.lr"] == "0.01"
        assert params[f"{role}.trainer.crop"] == "[64, 128]" and params[f"{role}.trainer.class_weights"] == "none"
    assert len(list((out / "04_feature/auto_labels").rglob("*_autoLabelTrainIds.png"))) == 4
    results = pd.read_csv(out / "08_reporting/evaluation_results.csv")
    assert {"teacher", "student"} <= set(results["model"])
    # the paper's evaluation: [0.5, 1.0, 2.0], with and without flip
    assert {"hierarchical/0.5-1.0-2.0", "hierarchical/0.5-1.0-2.0/flip"} <= set(
        results.loc[results["model"] == "student", "setting"])
    assert not (project / "data/06_models/teacher.pt").exists()  # the default run's outputs stay apart


def test_cityscapes_environment_without_its_root_says_what_to_set(tmp_path):
    project = copy_project(tmp_path / "project")
    env = {"CITYSCAPES_DATASET": ""}
    proc = run(["kedro", "run", "--env", "cityscapes", "--pipelines", "data_ingestion"], project, check=False, env=env)
    assert proc.returncode != 0 and "CITYSCAPES_DATASET" in proc.stdout + proc.stderr
    proc = run(["kedro", "run", "--env", "cityscapes", "--pipelines", "data_ingestion"], project, check=False,
               env={"CITYSCAPES_DATASET": str(tmp_path)})  # a folder, but no leftImg8bit/ in it
    text = " ".join((proc.stdout + proc.stderr).split())  # the log wraps lines
    assert proc.returncode != 0 and "no leftImg8bit/ folder" in text and "CITYSCAPES_DATASET" in text


@pytest.mark.slow
def test_mapillary_environment_converts_and_trains_on_65_classes(tmp_path):
    project = copy_project(tmp_path / "project")
    source = mapillary_tree(tmp_path / "vistas", {"training": 4, "validation": 2}, size=(96, 160))
    smoke = {"run": {"env": "mapillary", "pipelines": "data_ingestion,student_training,evaluation", "params": {
        "data": {"mapillary": {"long_edge": 128}},
        "student": {"model": SMOKE_MODEL, "trainer": SMOKE_TRAINER},
        "evaluation": {"progress_bar": False},
    }}}
    (project / "smoke.yml").write_text(yaml.safe_dump(smoke))
    run(["kedro", "run", "--config", "smoke.yml"], project, timeout=1500,
        env={"MAPILLARY_DATASET": str(source), "HRNET_W48_WEIGHTS": "none"})

    out = project / "data" / "mapillary"
    info = json.loads((out / "03_primary/raw_data_info.json").read_text())
    assert info["labels"] == "mapillary" and info["root"] == "data/mapillary/02_intermediate/mapillary"
    images = sorted((out / "02_intermediate/mapillary/leftImg8bit").rglob("*.jpg"))
    assert len(images) == 6 and max(Image.open(images[0]).size) == 128  # the long edge, resized
    model = torch.load(out / "06_models/student.pt", map_location="cpu", weights_only=True)["model_config"]
    assert (model["num_classes"], model["trunk"], model["head"]) == (65, "hrnet_w18_small", "ocr")
    results = pd.read_csv(out / "08_reporting/evaluation_results.csv")
    assert set(results["model"]) == {"student"}  # no teacher in this environment
    assert sum(c.startswith("iou/") for c in results.columns) == 65 and "iou/object--support--pole" in results.columns
    assert {"hierarchical/0.25-0.5-1.0-2.0/flip"} <= set(results["setting"])
    predictions = list((out / "07_model_output/cityscapes_results").rglob("*_pred_labelIds.png"))
    assert len(predictions) == 2 and max(int(np.asarray(Image.open(p)).max()) for p in predictions) <= 65


def test_mapillary_environment_refuses_the_teacher_before_it_starts(tmp_path):
    project = copy_project(tmp_path / "project")
    proc = run(["kedro", "run", "--env", "mapillary"], project, check=False, env={"MAPILLARY_DATASET": str(tmp_path)})
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and "has no coarse split" in text
    assert "--pipelines data_ingestion,student_training,evaluation" in text
    assert not (project / "data/mapillary").exists()  # stopped before ingestion


def test_each_environment_registers_its_models_under_its_own_names():
    """One ``champion`` alias per registered model: models trained on other data (another
    environment) never compete for it."""
    from hmsa.project.config import project_conf
    from hmsa.training.config import RoleConfig
    from tests.conftest import PROJECT_ROOT

    owners: dict[str, str] = {}
    envs = sorted(p.name for p in (PROJECT_ROOT / "conf").iterdir() if p.is_dir() and p.name != "local")
    assert {"base", "claims", "cityscapes", "mapillary"} <= set(envs)
    for env in envs:
        params = project_conf("parameters", PROJECT_ROOT, None if env == "base" else env)
        catalog = project_conf("catalog", PROJECT_ROOT, None if env == "base" else env)
        roles = [r for r in ("teacher", "student") if "AbsentDataset" not in str(catalog.get(f"{r}.model", {}).get("type"))]
        for role in roles:
            cfg = RoleConfig.model_validate(params[role])
            for name in [cfg.registered_model_name, *(cfg.variant(v).registered_model_name for v in cfg.variants)]:
                assert owners.setdefault(name, env) == env, f"{name} is registered by {owners[name]} and {env}"
    assert owners["hmsa-student"] == owners["hmsa-teacher"] == "base"  # the default names stay


@pytest.mark.parametrize("env", ["cityscapes", "mapillary"])
def test_the_real_data_environments_run_the_method_as_the_authors_did(env):
    """Each switch of docs/method.md's differing rows, as the environment resolves it."""
    from hmsa.autolabel.config import AutoLabelConfig
    from hmsa.evaluation.config import EvaluationConfig
    from hmsa.project.config import project_conf
    from hmsa.training.config import RoleConfig
    from tests.conftest import PROJECT_ROOT

    params = project_conf("parameters", PROJECT_ROOT, env)
    assert EvaluationConfig.model_validate(params["evaluation"]).fuse_above_one == "own_size"
    student = RoleConfig.model_validate(params["student"])
    explicit = student.variant("explicit").model
    assert (explicit.explicit_head, explicit.explicit_channels, explicit.builds_aux_head) == ("authors", 512, False)
    assert student.model.head == "ocr" and student.trainer.aux_weight == 0.4  # OCR's aux, as the authors' OCR
    if env == "cityscapes":
        labelling = AutoLabelConfig.model_validate(params["auto_labeling"])
        assert (labelling.merge_human_coarse, labelling.union_order, labelling.fuse_above_one) == (
            False, "union_first", "own_size")
        assert labelling.threshold_rule == "fixed" and labelling.threshold == 0.9
        assert labelling.keep_box is not None and labelling.union_classes == ["truck", "bus", "train"]
