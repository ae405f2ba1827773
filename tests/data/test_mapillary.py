"""Mapillary Vistas: conversion into the Cityscapes layout, and ingestion with its 66 ids."""

import csv

import numpy as np
import pytest
from PIL import Image

from hmsa.data import cityscapes, ingest, mapillary
from hmsa.data.labels import MAPILLARY
from hmsa.data.mapillary import MapillaryError, MapillarySpec, ensure_converted, resized_size
from tests.helpers import mapillary_tree


def test_conversion_resizes_to_the_long_edge_and_keeps_label_ids(tmp_path):
    source = mapillary_tree(tmp_path / "vistas", {"training": 3, "validation": 2}, size=(96, 160))
    dest = tmp_path / "converted"
    assert ensure_converted(source, dest, MapillarySpec(long_edge=80)) is True
    rows = list(csv.DictReader(open(dest / mapillary.KEYS_FILE)))
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 2
    for row in rows:
        image = dest / f"leftImg8bit/{row['split']}/mapillary/{row['image_id']}_leftImg8bit.jpg"
        label = dest / cityscapes.label_relpath("fine", row["split"], "mapillary", row["image_id"])
        assert Image.open(image).size == Image.open(label).size == (80, 48)  # 160x96 -> long edge 80
        folder = "training" if row["split"] == "train" else "validation"
        original = np.asarray(Image.open(source / folder / "v1.2/labels" / f"{row['mapillary_key']}.png"))
        converted = np.asarray(Image.open(label))
        # nearest resampling by 1/2: each output pixel is the source pixel at the centre of its 2x2 cell
        assert np.array_equal(converted, original[1::2, 1::2])
    # the converted tree indexes as a Cityscapes tree and checks with Mapillary's label table
    index = cityscapes.index_tree(dest, {"train": ["fine"], "val": ["fine"]})
    assert len(index.entries) == 5 and not index.problems
    result = ingest.check_tree(dest, index, labels=MAPILLARY)
    assert not result.problems
    assert list(result.class_pixels.columns[3:]) == [*MAPILLARY.class_names, "ignore"]
    assert result.class_pixels["construction--flat--road"].sum() > 0 and result.class_pixels["ignore"].sum() > 0


def test_conversion_is_reused_until_the_source_or_settings_change(tmp_path):
    source = mapillary_tree(tmp_path / "vistas", {"training": 2, "validation": 1}, layout="v1.1")  # labels/
    dest = tmp_path / "converted"
    assert ensure_converted(source, dest, MapillarySpec(long_edge=64)) is True
    stamp = (dest / mapillary.STAMP_FILE).stat().st_mtime_ns
    assert ensure_converted(source, dest, MapillarySpec(long_edge=64)) is False
    assert (dest / mapillary.STAMP_FILE).stat().st_mtime_ns == stamp
    assert ensure_converted(source, dest, MapillarySpec(long_edge=48)) is True
    assert Image.open(next(dest.glob("leftImg8bit/train/mapillary/*.jpg"))).size[0] == 48


def test_bad_mapillary_trees_are_clear_errors_and_keep_the_previous_conversion(tmp_path):
    with pytest.raises(MapillaryError, match="does not exist.*MAPILLARY_DATASET"):
        ensure_converted(tmp_path / "nowhere", tmp_path / "out", MapillarySpec())
    source = mapillary_tree(tmp_path / "vistas", {"training": 2, "validation": 1})
    dest = tmp_path / "converted"
    ensure_converted(source, dest, MapillarySpec(long_edge=64))
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    victim = next((source / "training/v1.2/labels").iterdir())
    victim.unlink()
    with pytest.raises(MapillaryError, match=f"image .*{victim.stem}.jpg has no label"):
        ensure_converted(source, dest, MapillarySpec(long_edge=64))
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


def test_label_ids_outside_mapillarys_table_are_refused(tmp_path):
    source = mapillary_tree(tmp_path / "vistas", {"training": 1, "validation": 1})
    dest = tmp_path / "converted"
    ensure_converted(source, dest, MapillarySpec(long_edge=64))
    label = next(dest.glob("gtFine/train/mapillary/*_labelIds.png"))
    ids = np.asarray(Image.open(label)).copy()
    ids[0, 0] = 70
    Image.fromarray(ids).save(label)
    index = cityscapes.index_tree(dest, {"train": ["fine"]})
    result = ingest.check_tree(dest, index, labels=MAPILLARY)
    assert len(result.problems) == 1 and "[70] are not in the Mapillary Vistas v1.2 table" in result.problems[0].problem


def test_resized_size_keeps_the_aspect_ratio():
    assert resized_size(4000, 3000, 2177) == (2177, 1633)
    assert resized_size(1000, 2000, 2177) == (1088, 2177)
