"""A tiny teacher and the coarse images of the tiny SynthCity tree, for the auto-labelling tests."""

import dataclasses

import pandas as pd
import pytest
import torch

from hmsa.autolabel.labelling import Job
from hmsa.data import cityscapes
from hmsa.data.labels import label_set
from hmsa.models import ModelConfig, build_model
from tests.models.conftest import TINY

#: Cityscapes trainIds the tests draw with
ROAD, CAR, TRUCK, BUS, TRAIN = 0, 13, 14, 15, 16


@pytest.fixture
def cityscapes_labels():
    return label_set("cityscapes")


@pytest.fixture
def manifest(tiny_tree_master) -> pd.DataFrame:
    """The image manifest of the tiny tree: coarse train_extra images, fine val images."""
    index = cityscapes.index_tree(tiny_tree_master, {"train_extra": ["coarse"], "val": ["fine"]})
    return pd.DataFrame([dataclasses.asdict(e) for e in index.entries])


@pytest.fixture
def jobs(tiny_tree_master):
    index = cityscapes.index_tree(tiny_tree_master, {"train_extra": ["coarse"]})
    return [Job(e.image_id, e.city, str(tiny_tree_master / e.image_path), str(tiny_tree_master / e.label_path))
            for e in index.entries]


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="hmsa", **TINY)).eval()


@pytest.fixture
def bundle(teacher) -> dict:
    """The teacher as the catalog's teacher.model gives it."""
    return {"model_config": teacher.cfg.model_dump(), "state_dict": teacher.state_dict()}
