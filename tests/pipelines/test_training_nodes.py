import pytest

from hmsa.config import ParameterError
from hmsa.pipelines import _training
from hmsa.pipelines.data_ingestion import nodes as ingestion

PARAMS = {"registered_model_name": "m", "trainer": {"class_weights": "balanced"}}


@pytest.fixture
def ingested(tiny_tree):
    data = {"source": "cityscapes", "cityscapes_root": str(tiny_tree), "workers": 1, "hash_raw_data": False}
    info = ingestion.prepare_raw_data(data)
    manifest, pixels, centroids, _ = ingestion.ingest_raw_data(info, data)
    return manifest, pixels, centroids, info


def test_human_coarse_labels_join_the_fine_ones(ingested):
    data = _training.select_training_data(PARAMS, "teacher", *ingested)
    assert len(data.train) == 8 and len(data.val) == 2
    assert sum("gtCoarse" in item.label for item in data.train) == 4
    assert data.class_pixels.shape == (19,) and data.class_pixels.sum() > 0
    assert data.key.startswith("None:")


def test_no_coarse_labels(ingested):
    data = _training.select_training_data({**PARAMS, "coarse_labels": "none"}, "student", *ingested)
    assert len(data.train) == 4 and not any("gtCoarse" in item.label for item in data.train)


def test_class_uniform_maps_centroids_to_items(ingested):
    params = {**PARAMS, "trainer": {"sampling": "class_uniform"}}
    data = _training.select_training_data(params, "teacher", *ingested)
    assert not data.centroids.empty
    assert data.centroids["item"].between(0, len(data.train) - 1).all()


def test_auto_labels_are_not_there_yet(ingested):
    with pytest.raises(ParameterError, match="coarse_labels=auto needs the auto_labeling pipeline"):
        _training.select_training_data({**PARAMS, "coarse_labels": "auto"}, "student", *ingested)


def test_a_typo_in_the_trainer_block_is_named(ingested):
    with pytest.raises(ParameterError, match=r"teacher\.trainer\.learning_rate: unknown parameter"):
        _training.select_training_data({**PARAMS, "trainer": {"learning_rate": 1}}, "teacher", *ingested)
