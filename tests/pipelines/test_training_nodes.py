import numpy as np
import pytest
from PIL import Image

from hmsa.project.config import ParameterError
from hmsa.pipelines import _training
from hmsa.pipelines.data_ingestion import nodes as ingestion

PARAMS = {"registered_model_name": "m", "trainer": {"class_weights": "balanced", "crop": [32, 32]}}


@pytest.fixture
def ingested(tiny_tree):
    data = {"source": "cityscapes", "cityscapes_root": str(tiny_tree), "workers": 1, "hash_raw_data": False}
    info = ingestion.prepare_raw_data(data)
    manifest, pixels, centroids, _, info = ingestion.ingest_raw_data(info, data)
    return manifest, pixels, centroids, info


def test_human_coarse_labels_join_the_fine_ones(ingested):
    data = _training.select_training_data(PARAMS, *ingested, role="teacher")
    assert len(data.train) == 8 and len(data.val) == 2
    assert sum("gtCoarse" in item.label for item in data.train) == 4
    assert data.class_pixels.shape == (19,) and data.class_pixels.sum() > 0
    assert data.key.startswith("None:")


def test_no_coarse_labels(ingested):
    data = _training.select_training_data({**PARAMS, "coarse_labels": "none"}, *ingested, role="student")
    assert len(data.train) == 4 and not any("gtCoarse" in item.label for item in data.train)


def test_class_uniform_maps_centroids_to_items(ingested):
    params = {**PARAMS, "trainer": {**PARAMS["trainer"], "sampling": "class_uniform"}}
    data = _training.select_training_data(params, *ingested, role="teacher")
    assert not data.centroids.empty
    assert data.centroids["item"].between(0, len(data.train) - 1).all()


def test_auto_labels_replace_the_human_coarse_ones(ingested, tmp_path):
    manifest, pixels, centroids, info = ingested
    coarse = manifest[manifest["label_kind"] == "coarse"]
    auto = coarse[["split", "city", "image_id", "image_path"]].assign(
        label_path=coarse["city"] + "/" + coarse["image_id"] + "_autoLabelTrainIds.png")
    for path in auto["label_path"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 64), 2, dtype=np.uint8)).save(tmp_path / path)  # all "building"
    data = _training.select_training_data({**PARAMS, "coarse_labels": "auto"}, manifest, pixels, centroids,
                                          info, auto, {"root": str(tmp_path)}, role="student")
    assert len(data.train) == 8
    auto_items = [i for i in data.train if i.label_format == "train_ids"]
    assert len(auto_items) == 4 and all(i.label.startswith(str(tmp_path)) for i in auto_items)
    human = _training.select_training_data({**PARAMS, "coarse_labels": "human"}, *ingested, role="student")
    assert data.class_pixels[2] > human.class_pixels[2]  # the auto-labels' building pixels are counted
    assert data.key != human.key


def test_class_uniform_draws_from_the_auto_labelled_images_too(ingested, tmp_path):
    from hmsa.pipelines.auto_labeling import nodes as auto_labeling

    manifest, pixels, centroids, info = ingested
    coarse = manifest[manifest["label_kind"] == "coarse"]
    auto = coarse[["split", "city", "image_id", "image_path"]].assign(
        label_path=coarse["city"] + "/" + coarse["image_id"] + "_autoLabelTrainIds.png").reset_index(drop=True)
    for k, path in enumerate(auto["label_path"]):
        label = np.full((32, 64), 255, dtype=np.uint8)
        label[4:10, 40 + k:44 + k] = 11  # a person, in a different place in each image
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(tmp_path / path)
    labels_info = {"root": str(tmp_path)}
    auto_centroids = auto_labeling.label_centroids(auto, labels_info, info, {"centroid_grid": [2, 4]})
    assert (auto_centroids["label_kind"] == "auto").all() and (auto_centroids["train_id"] == 11).all()
    assert len(auto_centroids) == len(auto)  # one tile holds each person; ignored pixels have none

    params = {**PARAMS, "coarse_labels": "auto", "trainer": {**PARAMS["trainer"], "sampling": "class_uniform"}}
    data = _training.select_training_data(params, manifest, pixels, centroids, info, auto, labels_info,
                                          auto_centroids, role="student")
    drawn = data.centroids[data.centroids["label_kind"] == "auto"]
    assert len(drawn) == len(auto)
    for row in drawn.itertuples(index=False):
        item = data.train[row.item]
        assert item.label_format == "train_ids" and item.label.endswith(f"{row.image_id}_autoLabelTrainIds.png")
        with Image.open(item.label) as label:
            assert np.asarray(label)[row.y, row.x] == 11  # the centre is on the person
    fine = data.centroids[data.centroids["label_kind"] != "auto"]
    assert not fine.empty and fine["item"].lt(len(data.train) - len(auto)).all()
    with pytest.raises(ValueError, match="auto_label_centroids: run the auto_labeling pipeline"):
        _training.select_training_data(params, manifest, pixels, centroids, info, auto, labels_info, role="student")


def test_the_teacher_cannot_learn_from_auto_labels(ingested):
    with pytest.raises(ValueError, match="only the student can train on auto-labels"):
        _training.select_training_data({**PARAMS, "coarse_labels": "auto"}, *ingested, role="teacher")


def test_a_typo_in_the_trainer_block_is_named(ingested):
    with pytest.raises(ParameterError, match=r"teacher\.trainer\.learning_rate: unknown parameter"):
        _training.select_training_data({**PARAMS, "trainer": {"learning_rate": 1}}, *ingested, role="teacher")


def test_each_baseline_asked_for_trains_under_its_own_name_and_the_others_yield_a_record(ingested, tmp_path):
    from tests.models.conftest import TINY

    params = {**PARAMS, "coarse_labels": "none", "variants": ["single"],
              "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
              "trainer": {"epochs": 1, "batch_size": 2, "crop": [32, 32], "num_workers": 0, "progress_bar": False,
                          "checkpoint_dir": str(tmp_path / "ckpt")}}
    data = _training.select_training_data(params, *ingested, role="student_single")
    bundle, curve, metrics = _training.train_model(params, data, role="student_single")
    assert bundle["model_config"]["kind"] == "single" and len(curve) == 1
    assert list(metrics) == ["student_single"] and metrics["student_single"]["epochs"] == 1  # named as the evaluation names it
    assert _training.register_model(params, bundle, role="student_single") == {
        "registered_model": "m-single", "version": None}  # no MLflow run is active
    assert sorted(p.name for p in tmp_path.glob("ckpt*")) == ["ckpt-single"]

    skipped = _training.select_training_data(params, *ingested, role="student_human")
    assert "student.variants does not list 'human'" in skipped["not_trained"]
    bundle, curve, metrics = _training.train_model(params, skipped, role="student_human")
    assert bundle == skipped and curve.empty and metrics == {"student_human": {}}
    record = _training.register_model(params, bundle, role="student_human")
    assert record["version"] is None and record["registered_model"] == "m-human" and "not_trained" in record
    assert sorted(p.name for p in tmp_path.glob("ckpt*")) == ["ckpt-single"]  # nothing trained


def test_unknown_variant_is_named(ingested):
    with pytest.raises(ParameterError, match="student.variants"):
        _training.select_training_data({**PARAMS, "variants": ["average"]}, *ingested, role="student_single")


def test_checkpoints_go_under_paths_unless_the_trainer_names_a_folder(tmp_path):
    cfg = _training.role_config(PARAMS, "student", {"checkpoints": str(tmp_path)})
    assert cfg.trainer.checkpoint_dir == str(tmp_path / "student")
    single = _training.role_config(PARAMS, "student_single", {"checkpoints": str(tmp_path)})
    assert single.trainer.checkpoint_dir == str(tmp_path / "student-single") and single.model.kind == "single"
    own = _training.role_config({**PARAMS, "trainer": {"checkpoint_dir": "elsewhere"}}, "student",
                                {"checkpoints": str(tmp_path)})
    assert own.trainer.checkpoint_dir == "elsewhere"


def test_a_crop_larger_than_every_training_image_is_refused_before_training(ingested):
    manifest = ingested[0]
    tallest, widest = int(manifest["height"].max()), int(manifest["width"].max())
    params = {**PARAMS, "trainer": {"crop": [tallest * 8, widest]}}
    with pytest.raises(ValueError, match=rf"student\.trainer\.crop is {tallest * 8} x {widest} .*the largest is "
                                         rf"{tallest} x {widest}.* at most \[{tallest}, {widest}\]"):
        _training.select_training_data({**params, "coarse_labels": "none"}, *ingested, role="student")
    data = _training.select_training_data({**PARAMS, "trainer": {"crop": [tallest, widest]}}, *ingested, role="teacher")
    assert len(data.train) == 8


def test_the_training_template_runs_sliced_on_an_in_memory_catalog(ingested, tmp_path):
    """As spaceflights tests its pipelines: the namespaced template, run by Kedro's runner on
    MemoryDatasets; a baseline's namespace trains its own kind and leaves the others alone."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from hmsa.pipelines._training import training_pipeline
    from tests.models.conftest import TINY

    manifest, pixels, centroids, info = ingested
    params = {**PARAMS, "coarse_labels": "none", "variants": ["single"],
              "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
              "trainer": {"epochs": 1, "batch_size": 2, "crop": [32, 32], "num_workers": 0, "progress_bar": False}}
    data = {"image_manifest": manifest, "class_pixel_counts": pixels, "class_centroids": centroids,
            # the student's namespaces read the auto-labels too; coarse_labels: none leaves them unused
            "raw_data_info": info, "auto_label_manifest": manifest.head(0), "auto_labels_info": {"root": str(tmp_path)},
            "auto_label_centroids": centroids.head(0),
            "params:student": params, "params:paths": {"checkpoints": str(tmp_path)}}
    pipe = training_pipeline("student_single") + training_pipeline("student_human")
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in data.items()})
    outputs = SequentialRunner().run(pipe, catalog)  # what no node reads: registries, curves, metrics
    free = {name: (value.load() if hasattr(value, "load") else value) for name, value in outputs.items()}
    assert {n.namespace for n in pipe.nodes} == {"student_single", "student_human"}
    assert free["student_single.registry"] == {"registered_model": "m-single", "version": None}
    assert free["student_single.training_metrics"]["student_single"]["epochs"] == 1
    assert len(free["student_single.training_curve"]) == 1
    assert "not_trained" in free["student_human.registry"] and free["student_human.training_curve"].empty
    from hmsa.training import checkpoint

    assert checkpoint.load(tmp_path / "student-single" / "best.pt")["model_config"]["kind"] == "single"
    assert not (tmp_path / "student-human").exists()  # not trained: no checkpoints
