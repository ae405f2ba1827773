from hmsa.data import cityscapes

from ..conftest import TINY_SPLITS


def test_names_follow_the_cityscapes_pattern():
    stem = cityscapes.image_id("aachen", 12, 19)
    assert stem == "aachen_000012_000019"
    assert cityscapes.image_relpath("train", "aachen", stem) == "leftImg8bit/train/aachen/aachen_000012_000019_leftImg8bit.png"
    assert cityscapes.label_relpath("coarse", "train_extra", "aachen", stem) == (
        "gtCoarse/train_extra/aachen/aachen_000012_000019_gtCoarse_labelIds.png"
    )


def test_index_pairs_every_image_with_its_labels(tiny_tree_master):
    index = cityscapes.index_tree(tiny_tree_master, TINY_SPLITS)
    assert not index.problems and not index.empty_splits
    assert len(index.entries) == 10
    extra = [e for e in index.entries if e.split == "train_extra"]
    assert all(e.label_kind == "coarse" and e.heldout_fine_path for e in extra)
    assert all(e.heldout_fine_path is None for e in index.entries if e.split != "train_extra")
    assert all((tiny_tree_master / e.label_path).is_file() for e in index.entries)


def test_a_split_may_require_two_label_kinds(tiny_tree):
    # real Cityscapes has both gtFine and gtCoarse for train: one row per label file
    for fine in tiny_tree.glob("gtFine/train/*/*_gtFine_labelIds.png"):
        coarse = tiny_tree / str(fine.relative_to(tiny_tree)).replace("gtFine", "gtCoarse")
        coarse.parent.mkdir(parents=True, exist_ok=True)
        coarse.write_bytes(fine.read_bytes())
    index = cityscapes.index_tree(tiny_tree, {"train": ["fine", "coarse"]})
    assert not index.problems
    assert sorted(e.label_kind for e in index.entries) == ["coarse"] * 4 + ["fine"] * 4


def test_other_cityscapes_files_are_not_problems(tiny_tree):
    label = next(tiny_tree.glob("gtFine/train/*/*_gtFine_labelIds.png"))
    label.with_name(label.name.replace("labelIds", "color")).write_bytes(label.read_bytes())
    label.with_name(label.name.replace("labelIds.png", "polygons.json")).write_text("{}")
    assert not cityscapes.index_tree(tiny_tree, TINY_SPLITS).problems
