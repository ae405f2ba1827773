"""Labelling coarse images: three PNGs each, resumable, sharded, stamped with their teacher."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hmsa.autolabel import labelling
from hmsa.autolabel.config import AutoLabelConfig
from hmsa.autolabel.labelling import Job, label_images, model_digest, output_paths, prepare_output
from hmsa.autolabel.refinement import Refinement, fixed_threshold_table
from hmsa.data.labels import label_set
from hmsa.models import ModelConfig, build_model
from tests.models.conftest import TINY

from .conftest import TRUCK

FAST = {"readers": 0, "progress_bar": False, "scales": [0.5, 1.0], "device": "cpu", "precision": "fp32",
        "channels_last": "off"}


def test_writes_three_pngs_per_image_in_city_folders(teacher, jobs, tmp_path):
    counts = label_images(teacher, jobs, tmp_path, Refinement(threshold=0.0), batch_size=3, readers=0)
    assert counts == {"labelled": 4, "skipped": 0, "total": 4}
    for job in jobs:
        paths = output_paths(tmp_path, job.city, job.image_id)
        assert paths["label"].parent.name == job.city
        with Image.open(paths["label"]) as lab, Image.open(paths["confidence"]) as conf, Image.open(paths["prediction"]) as pred:
            assert lab.mode == conf.mode == pred.mode == "L" and lab.size == (64, 32)
            # threshold 0 and no union: every pixel keeps the teacher's class
            assert np.array_equal(np.asarray(lab), np.asarray(pred)) and np.asarray(lab).max() < 19
    assert not list(tmp_path.rglob("*.tmp"))


def test_rerun_skips_finished_images(teacher, jobs, tmp_path):
    label_images(teacher, jobs[:2], tmp_path, Refinement(), readers=0)
    done = output_paths(tmp_path, jobs[0].city, jobs[0].image_id)["label"]
    mtime = done.stat().st_mtime_ns
    counts = label_images(teacher, jobs, tmp_path, Refinement(), readers=0)
    assert counts == {"labelled": 2, "skipped": 2, "total": 4}
    assert done.stat().st_mtime_ns == mtime


def test_ranks_share_the_images(teacher, jobs, tmp_path):
    a = label_images(teacher, jobs, tmp_path, Refinement(), readers=0, rank=0, world=2)
    b = label_images(teacher, jobs, tmp_path, Refinement(), readers=0, rank=1, world=2)
    assert a["labelled"] + b["labelled"] == 4 and a["labelled"] == 2
    assert len(list(tmp_path.rglob("*_autoLabelTrainIds.png"))) == 4


def test_human_coarse_labels_are_read_with_the_given_label_set(tmp_path, cityscapes_labels):
    human = np.zeros((2, 3), dtype=np.uint8)  # label id 0: unlabeled
    human[0, :] = 27  # Cityscapes label id 27: truck, trainId 14
    Image.fromarray(human).save(tmp_path / "human.png")
    job = Job("img", "city", "unused.png", str(tmp_path / "human.png"))
    prediction, confidence = np.zeros((2, 3), np.uint8), np.full((2, 3), 0.95)
    union = Refinement(union_classes=(TRUCK,))
    labelling.write_outputs(job, tmp_path / "out", prediction, confidence, union, cityscapes_labels)
    with Image.open(output_paths(tmp_path / "out", "city", "img")["label"]) as lab:
        assert np.asarray(lab).tolist() == [[TRUCK] * 3, [0] * 3]
    with pytest.raises(ValueError, match=r"give the data set's label set \(labels=...\)"):
        labelling.write_outputs(job, tmp_path / "other", prediction, confidence, union)
    # without union or merge the human label is not needed
    labelling.write_outputs(job, tmp_path / "plain", prediction, confidence, Refinement())
    assert output_paths(tmp_path / "plain", "city", "img")["label"].is_file()


def test_labels_of_another_teacher_are_not_resumed(teacher, jobs, tmp_path):
    stamp = {"teacher": model_digest(teacher), "union_classes": (14, 15)}  # tuples too
    assert prepare_output(tmp_path, stamp) is False
    label_images(teacher, jobs, tmp_path, Refinement(), readers=0)
    assert prepare_output(tmp_path, stamp) is False  # same teacher: labels stay, a rerun resumes
    assert len(list(tmp_path.rglob("*_autoLabelTrainIds.png"))) == 4
    other = build_model(ModelConfig(kind="hmsa", **TINY))
    assert model_digest(other) != stamp["teacher"]
    assert prepare_output(tmp_path, {**stamp, "teacher": model_digest(other)}) is True
    assert not list(tmp_path.rglob("*.png"))
    counts = label_images(other, jobs, tmp_path, Refinement(), readers=0)
    assert counts["labelled"] == 4


def test_the_whole_stage_labels_the_coarse_images_and_returns_their_manifest(manifest, tiny_tree_master, bundle,
                                                                              teacher, cityscapes_labels, tmp_path):
    cfg = AutoLabelConfig(merge_human_coarse=True, **FAST)
    out = tmp_path / "labels"
    result, info = labelling.label_coarse_images(cfg, bundle, manifest, tiny_tree_master, out, cityscapes_labels,
                                                 fixed_threshold_table(cityscapes_labels.class_names, 0.9))
    coarse = manifest[manifest["label_kind"] == "coarse"]
    assert result["image_id"].tolist() == coarse["image_id"].tolist()
    assert result["human_label_path"].tolist() == coarse["label_path"].tolist()
    for kind in ("label", "confidence", "prediction"):
        assert all((out / p).is_file() for p in result[f"{kind}_path"])
    assert info["root"] == str(out) and info["teacher_digest"] == model_digest(teacher)
    stamp = json.loads((out / labelling.STAMP).read_text())
    assert stamp["teacher"] == info["teacher_digest"] and stamp["refinement"]["union_classes"] == [14, 15, 16]
    assert stamp["refinement"]["merge_human_coarse"] is True and stamp["scales"] == [0.5, 1.0]


def test_the_whole_stage_refuses_what_does_not_fit_the_data_sets_label_set(manifest, tiny_tree_master, bundle,
                                                                            cityscapes_labels, tmp_path):
    cfg = AutoLabelConfig(union_classes=[], **FAST)
    mapillary = label_set("mapillary")
    stale = fixed_threshold_table(mapillary.class_names, 0.9)
    with pytest.raises(ValueError, match="auto_label_thresholds: its classes are not those of the cityscapes"):
        labelling.label_coarse_images(cfg, bundle, manifest, tiny_tree_master, tmp_path, cityscapes_labels, stale)
    with pytest.raises(ValueError, match="the teacher predicts 19 classes"):
        labelling.label_coarse_images(cfg, bundle, manifest, tiny_tree_master, tmp_path, mapillary, stale)
    with pytest.raises(ValueError, match=r"auto_labeling.splits \['val'\]: no coarse images to label"):
        labelling.label_coarse_images(cfg.model_copy(update={"splits": ["val"]}), bundle, manifest, tiny_tree_master,
                                      tmp_path, cityscapes_labels)
    assert not list(tmp_path.rglob("*.png"))


def test_the_manifest_names_each_images_three_files():
    rows = pd.DataFrame([{"split": "train_extra", "city": "c", "image_id": "c_1", "image_path": "i.png",
                          "label_path": "h.png", "heldout_fine_path": None, "label_kind": "coarse"}])
    m = labelling.label_manifest(rows)
    assert m.loc[0, "human_label_path"] == "h.png" and "label_kind" not in m
    assert m.loc[0, "label_path"] == "c/c_1_autoLabelTrainIds.png"
    assert m.loc[0, "confidence_path"] == "c/c_1_autoConfidence.png"
    assert m.loc[0, "prediction_path"] == "c/c_1_autoPredTrainIds.png"
