from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmsa.data import cityscapes, ingest
from hmsa.data.ingest import CentroidSpec, DataValidationError

from ..conftest import TINY_SPLITS

# label id -> trainId for the classes SynthCity draws, written out from the official table
TRAIN_ID = {7: 0, 8: 1, 11: 2, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 26: 13, 27: 14, 28: 15}


def _ingest(root: Path, on_bad_file: str = "fail", workers: int = 1, splits=TINY_SPLITS):
    index = cityscapes.index_tree(root, splits)
    result = ingest.check_tree(root, index, CentroidSpec(2, 4, 1), workers=workers)
    return ingest.apply_bad_file_policy(result, index, root, on_bad_file, list(splits))


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def test_good_tree_gives_manifest_counts_and_centroids(tiny_tree_master):
    result, skipped = _ingest(tiny_tree_master)
    assert skipped.empty
    m = result.manifest
    assert len(m) == 10 and set(m["split"]) == {"train", "val", "train_extra"}
    assert (m["height"] == 32).all() and (m["width"] == 64).all()
    assert list(result.class_pixels[["split", "image_id", "label_kind"]].itertuples(index=False)) == list(
        m[["split", "image_id", "label_kind"]].itertuples(index=False)
    )
    # every pixel is counted once: 19 classes + ignore
    counts = result.class_pixels.drop(columns=["split", "image_id", "label_kind"]).to_numpy()
    assert (counts.sum(axis=1) == 32 * 64).all()


def test_class_counts_match_an_independent_count(tiny_tree_master):
    result, _ = _ingest(tiny_tree_master)
    for row, counts in zip(result.manifest.itertuples(), result.class_pixels.itertuples()):
        ids = np.asarray(Image.open(tiny_tree_master / row.label_path))
        for label_id, train_id in TRAIN_ID.items():
            name = ingest.COUNT_COLUMNS[train_id]
            assert result.class_pixels.loc[counts.Index, name] == int((ids == label_id).sum())
        unknown_to_training = ~np.isin(ids, list(TRAIN_ID))
        assert result.class_pixels.loc[counts.Index, "ignore"] == int(unknown_to_training.sum())


def test_labelled_fraction_is_low_for_coarse_labels(tiny_tree_master):
    result, _ = _ingest(tiny_tree_master)
    by_kind = result.manifest.groupby("label_kind")["labelled_fraction"].mean()
    assert by_kind["coarse"] < by_kind["fine"]


def test_centroids_sit_on_their_class_in_their_tile():
    train_ids = np.full((8, 16), 255, dtype=np.uint8)
    train_ids[0:2, 0:4] = 3  # top-left tile of a 2x4 grid (tiles are 4x4)
    train_ids[6:8, 12:16] = 7  # bottom-right tile
    train_ids[5, 5] = 7  # a single pixel: below min_pixels
    rows = ingest.class_centroids(train_ids, CentroidSpec(2, 4, min_pixels=2))
    assert sorted(map(tuple, rows.tolist())) == [(3, 0, 0, 2, 8), (7, 7, 6, 14, 8)]


def test_parallel_check_gives_the_serial_result(tiny_tree_master):
    serial, _ = _ingest(tiny_tree_master, workers=1)
    parallel, _ = _ingest(tiny_tree_master, workers=2)
    assert serial.manifest.equals(parallel.manifest)
    assert serial.class_pixels.equals(parallel.class_pixels)
    assert serial.centroids.equals(parallel.centroids)


# ---------------------------------------------------------------- one test per bad input


def _expect_error(root: Path, bad: str, words: str):
    with pytest.raises(DataValidationError) as err:
        _ingest(root)
    assert bad in str(err.value), str(err.value)
    assert words in str(err.value), str(err.value)
    # skip mode leaves the bad file out, reports it, and keeps the rest
    result, skipped = _ingest(root, on_bad_file="skip")
    assert bad in skipped["path"].tolist()
    assert words in " ".join(skipped["problem"])
    assert bad not in result.manifest["image_path"].tolist() + result.manifest["label_path"].tolist()
    assert len(result.manifest) == len(result.class_pixels) >= 8
    return result, skipped


def test_image_without_label(tiny_tree):
    label = _first(tiny_tree, "gtFine/train/*/*.png")
    label.unlink()
    image = _rel(tiny_tree, _first(tiny_tree, "leftImg8bit/train/*/*.png"))
    _expect_error(tiny_tree, image, "no fine label file")


def test_label_without_image(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/val/*/*.png")
    image.unlink()
    label = _rel(tiny_tree, _first(tiny_tree, "gtFine/val/*/*.png"))
    _expect_error(tiny_tree, label, "label file has no image")


def test_size_mismatch(tiny_tree):
    label = _first(tiny_tree, "gtFine/train/*/*.png")
    Image.open(label).resize((60, 30), Image.NEAREST).save(label)
    _expect_error(tiny_tree, _rel(tiny_tree, label), "label is 60x30 but its image")


def test_unknown_label_ids(tiny_tree):
    label = _first(tiny_tree, "gtCoarse/train_extra/*/*.png")
    ids = np.asarray(Image.open(label)).copy()
    ids[0, :3] = [40, 41, 200]
    Image.fromarray(ids).save(label)
    _expect_error(tiny_tree, _rel(tiny_tree, label), "label ids [40, 41, 200] are not in the Cityscapes label table")


def test_truncated_png(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    _expect_error(tiny_tree, _rel(tiny_tree, image), "unreadable or truncated image")


def test_not_a_png_at_all(tiny_tree):
    label = _first(tiny_tree, "gtFine/val/*/*.png")
    label.write_bytes(b"this is not an image")
    _expect_error(tiny_tree, _rel(tiny_tree, label), "unreadable or truncated fine label")


def test_greyscale_image(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    Image.open(image).convert("L").save(image)
    _expect_error(tiny_tree, _rel(tiny_tree, image), "image has mode L, expected RGB")


def test_rgba_image(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    Image.open(image).convert("RGBA").save(image)
    _expect_error(tiny_tree, _rel(tiny_tree, image), "image has mode RGBA, expected RGB")


def test_colour_png_given_as_label(tiny_tree):
    label = _first(tiny_tree, "gtFine/train/*/*.png")
    Image.open(label).convert("RGB").save(label)
    _expect_error(tiny_tree, _rel(tiny_tree, label), "label has mode RGB")


def test_badly_named_file(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    renamed = image.with_name("holiday_photo.png")
    image.rename(renamed)
    _expect_error(tiny_tree, _rel(tiny_tree, renamed), "does not follow")


def test_empty_split_fails_even_when_skipping(tiny_tree):
    for image in tiny_tree.glob("leftImg8bit/val/*/*.png"):
        image.unlink()
    for mode in ("fail", "skip"):
        with pytest.raises(DataValidationError, match=r"Empty split\(s\) 'val'"):
            _ingest(tiny_tree, on_bad_file=mode)


def test_split_whose_every_file_is_bad_fails_when_skipping(tiny_tree):
    for label in tiny_tree.glob("gtFine/val/*/*.png"):
        label.write_bytes(b"broken")
    with pytest.raises(DataValidationError, match=r"No good file is left in split\(s\) \['val'\]"):
        _ingest(tiny_tree, on_bad_file="skip")


def test_every_bad_file_is_listed_in_one_error(tiny_tree):
    labels = sorted(tiny_tree.glob("gtFine/train/*/*.png"))[:2]
    for label in labels:
        label.write_bytes(b"broken")
    with pytest.raises(DataValidationError) as err:
        _ingest(tiny_tree)
    assert len(err.value.problems) == 2
    assert all(_rel(tiny_tree, p) in str(err.value) for p in labels)
    assert "data.on_bad_file: skip" in str(err.value)


def test_centroids_match_a_brute_force_computation():
    rng = np.random.default_rng(0)
    train_ids = rng.choice([0, 1, 5, 13, 255], size=(30, 50), p=[0.4, 0.3, 0.05, 0.05, 0.2]).astype(np.uint8)
    spec = CentroidSpec(3, 4, min_pixels=3)
    expected = []
    row_edges = [r * 30 // 3 for r in range(4)]
    col_edges = [c * 50 // 4 for c in range(5)]
    for r in range(3):
        for c in range(4):
            block = train_ids[row_edges[r]:row_edges[r + 1], col_edges[c]:col_edges[c + 1]]
            for k in (0, 1, 5, 13):
                ys, xs = np.nonzero(block == k)
                if len(ys) >= 3:
                    expected.append((k, r * 4 + c, round(ys.mean() + row_edges[r]), round(xs.mean() + col_edges[c]), len(ys)))
    assert sorted(map(tuple, ingest.class_centroids(train_ids, spec).tolist())) == sorted(expected)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tiny_tree):
    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    width, height = Image.open(image).size
    index = cityscapes.index_tree(tiny_tree, TINY_SPLITS)
    result = ingest.check_tree(tiny_tree, index, CentroidSpec(2, 4, 1), max_pixels=width * height - 1)
    problems = {p.path: p.problem for p in result.problems}
    assert "over data.max_image_pixels" in problems[_rel(tiny_tree, image)]
    assert "raise data.max_image_pixels" in problems[_rel(tiny_tree, image)]


def test_a_decompression_bomb_is_a_named_problem(tiny_tree):
    from tests.data.test_images import png_header_only

    image = _first(tiny_tree, "leftImg8bit/train/*/*.png")
    png_header_only(image, 14000, 14000)
    _expect_error(tiny_tree, _rel(tiny_tree, image), "over data.max_image_pixels")
