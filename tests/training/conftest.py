import pytest

from hmsa.models import ModelConfig
from hmsa.training.config import TrainerConfig

from ..models.conftest import TINY


@pytest.fixture
def tiny_setup(tiny_tree_master, tmp_path):
    """Items from the tiny tree, a tiny HMSA model and a short trainer config."""
    from hmsa.data import cityscapes
    from hmsa.training.data import Item

    index = cityscapes.index_tree(tiny_tree_master, {"train": ["fine"], "val": ["fine"]})
    items = {s: [Item(str(tiny_tree_master / e.image_path), str(tiny_tree_master / e.label_path))
                 for e in index.entries if e.split == s] for s in ("train", "val")}
    model = ModelConfig(kind="hmsa", **TINY)
    trainer = TrainerConfig(epochs=2, batch_size=2, crop=(32, 32), num_workers=0, class_weights="none",
                            checkpoint_dir=str(tmp_path / "ckpt"), progress_bar=False)
    return items, model, trainer
