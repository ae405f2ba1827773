import errno
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hmsa import autolabel
from hmsa.autolabel import Job, Refinement, hard_labels, refine
from hmsa.data import cityscapes
from hmsa.fileio import DiskFullError
from hmsa.models import ModelConfig, build_model

from .models.conftest import TINY

BUS, TRUCK, CAR, ROAD = 15, 14, 13, 0


def test_threshold_keeps_pixels_at_and_above_it():
    pred = np.array([[1, 2, 3, 4]], dtype=np.uint8)
    conf = np.array([[0.8999, 0.9, 0.9001, 1.0]])
    assert hard_labels(pred, conf, 0.9).tolist() == [[255, 2, 3, 4]]
    assert hard_labels(pred, conf, 0.0).tolist() == [[1, 2, 3, 4]]
    assert hard_labels(pred, conf, 1.0).tolist() == [[255, 255, 255, 4]]


def test_threshold_outside_zero_one_is_refused():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
            Refinement(threshold=bad)


def test_ignore_propagates_without_merge():
    labels = np.array([[255, ROAD, 255]], dtype=np.uint8)
    human = np.array([[CAR, 255, 255]], dtype=np.uint8)
    out = refine(labels, human, Refinement(union_classes=()))
    assert out.tolist() == [[255, ROAD, 255]]  # teacher abstains: stays ignore; human void changes nothing


def test_merge_fills_only_where_the_teacher_abstains():
    labels = np.array([[255, ROAD, 255]], dtype=np.uint8)
    human = np.array([[CAR, CAR, 255]], dtype=np.uint8)
    out = refine(labels, human, Refinement(merge_human_coarse=True, union_classes=()))
    assert out.tolist() == [[CAR, ROAD, 255]]


def test_union_classes_take_the_human_region():
    labels = np.array([[ROAD, 255, BUS, CAR]], dtype=np.uint8)
    human = np.array([[BUS, TRUCK, 255, CAR]], dtype=np.uint8)
    out = refine(labels, human, Refinement())  # default union: truck, bus, train
    assert out.tolist() == [[BUS, TRUCK, BUS, CAR]]


def test_border_becomes_ignore():
    out = refine(np.zeros((5, 6), dtype=np.uint8), None, Refinement(border=1))
    assert (out[0] == 255).all() and (out[:, -1] == 255).all() and (out[1:4, 1:5] == 0).all()


@pytest.fixture
def jobs(tiny_tree_master):
    index = cityscapes.index_tree(tiny_tree_master, {"train_extra": ["coarse"]})
    return [Job(e.image_id, e.city, str(tiny_tree_master / e.image_path), str(tiny_tree_master / e.label_path))
            for e in index.entries]


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="hmsa", **TINY)).eval()


def test_writes_three_pngs_per_image_in_city_folders(teacher, jobs, tmp_path):
    counts = autolabel.label_images(teacher, jobs, tmp_path, Refinement(threshold=0.0), batch_size=3, readers=0)
    assert counts == {"labelled": 4, "skipped": 0, "total": 4}
    for job in jobs:
        paths = autolabel.output_paths(tmp_path, job.city, job.image_id)
        assert paths["label"].parent.name == job.city
        with Image.open(paths["label"]) as lab, Image.open(paths["confidence"]) as conf, Image.open(paths["prediction"]) as pred:
            assert lab.mode == conf.mode == pred.mode == "L" and lab.size == (64, 32)
            # threshold 0: every pixel keeps the teacher's class, unless a union class was drawn by a human
            assert np.asarray(lab).max() < 19
    assert not list(tmp_path.rglob("*.tmp"))


def test_rerun_skips_finished_images(teacher, jobs, tmp_path):
    autolabel.label_images(teacher, jobs[:2], tmp_path, Refinement(), readers=0)
    done = autolabel.output_paths(tmp_path, jobs[0].city, jobs[0].image_id)["label"]
    mtime = done.stat().st_mtime_ns
    counts = autolabel.label_images(teacher, jobs, tmp_path, Refinement(), readers=0)
    assert counts == {"labelled": 2, "skipped": 2, "total": 4}
    assert done.stat().st_mtime_ns == mtime


def test_ranks_share_the_images(teacher, jobs, tmp_path):
    a = autolabel.label_images(teacher, jobs, tmp_path, Refinement(), readers=0, rank=0, world=2)
    b = autolabel.label_images(teacher, jobs, tmp_path, Refinement(), readers=0, rank=1, world=2)
    assert a["labelled"] + b["labelled"] == 4 and a["labelled"] == 2
    assert len(list(tmp_path.rglob("*_autoLabelTrainIds.png"))) == 4


def test_a_full_disk_leaves_the_previous_png_and_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    autolabel.write_png_atomic(np.full((4, 4), 3, dtype=np.uint8), target)
    real_save = Image.Image.save

    def broken_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(DiskFullError, match=r"no space left on the device while writing .*x\.png"):
        autolabel.write_png_atomic(np.zeros((4, 4), dtype=np.uint8), target)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    assert (np.asarray(Image.open(target)) == 3).all()


def test_quality_against_hand_counts(tmp_path, monkeypatch):
    def save(name, array):
        Image.fromarray(np.array(array, dtype=np.uint8)).save(tmp_path / name)
        return str(tmp_path / name)

    # label ids: 7 road (trainId 0), 26 car (13), 0 void; 4 pixels, all labelled in the truth
    fine = save("fine.png", [[7, 7, 26, 26]])
    human = save("human.png", [[7, 0, 26, 0]])  # covers 2 of 4, both right
    pred = save("pred.png", [[0, 0, 13, 0]])  # teacher: 3 of 4 right
    conf = save("conf.png", [[255, 128, 255, 255]])
    label = save("label.png", [[0, 255, 13, 0]])  # thresholded at 0.9: 3 covered, 2 right
    rows = pd.DataFrame([{"label": label, "confidence": conf, "prediction": pred, "human": human, "fine": fine}])
    q = autolabel.quality(rows, thresholds=(0.5, 0.9))
    summary = q["summary"].set_index("source")
    assert summary.loc["auto", "coverage"] == pytest.approx(3 / 4) and summary.loc["auto", "accuracy"] == pytest.approx(2 / 3)
    assert summary.loc["human", "coverage"] == pytest.approx(2 / 4) and summary.loc["human", "accuracy"] == 1.0
    sweep = q["sweep"].set_index("threshold")
    assert sweep.loc[0.5, "coverage"] == 1.0 and sweep.loc[0.5, "accuracy"] == pytest.approx(3 / 4)
    assert sweep.loc[0.9, "coverage"] == pytest.approx(3 / 4) and sweep.loc[0.9, "accuracy"] == pytest.approx(2 / 3)
    car = q["per_class"].query("source == 'auto' and class_name == 'car'").iloc[0]
    assert car["coverage"] == pytest.approx(1.0) and car["accuracy"] == pytest.approx(0.5)
    # labelled road twice (one is a car): that label is right half the time; the car label always
    road = q["per_class"].query("source == 'auto' and class_name == 'road'").iloc[0]
    assert road["labelled_as"] == 2 and road["label_accuracy"] == pytest.approx(0.5) and car["label_accuracy"] == 1.0
    assert summary.loc["auto", "worst_class"] == ""  # no class has MIN_CLASS_PIXELS labelled pixels
    monkeypatch.setattr(autolabel, "MIN_CLASS_PIXELS", 1)
    summary = autolabel.quality(rows, thresholds=(0.5,))["summary"].set_index("source")
    assert summary.loc["auto", "worst_class"] == "road" and summary.loc["auto", "worst_class_accuracy"] == 0.5


def test_per_class_thresholds_are_each_class_lowest_level_at_the_target_accuracy():
    total, correct = np.zeros((autolabel.NUM_CLASSES, 256), np.int64), np.zeros((autolabel.NUM_CLASSES, 256), np.int64)
    total[0, 100], correct[0, 100] = 50, 50  # road: always right, even unsure -> labelled from level 0
    total[1, [100, 200, 250]] = 100  # sidewalk: right only when confident
    correct[1, [100, 200, 250]] = [0, 97, 100]
    total[2, 255], correct[2, 255] = 100, 50  # building: confidently wrong half the time -> never labelled
    t = autolabel.class_thresholds(total, correct, target=0.98)
    assert t[0] == 0.0
    assert t[1] == pytest.approx(100.5 / 255)  # just above level 100: levels 200 and 250 keep 197/200 right
    assert t[2] == autolabel.NEVER and t[3] == autolabel.NEVER  # never right enough; never predicted
    pred = np.array([[0, 1, 1, 2]], dtype=np.uint8)
    conf = np.array([[0.1, 100 / 255, 101 / 255, 1.0]])
    assert hard_labels(pred, conf, t).tolist() == [[0, 255, 1, 255]]


def test_confidence_counts_match_the_teachers_own_predictions(teacher):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 48)
    pred, conf = autolabel.predict(teacher, images, (0.5, 1.0), False)
    labels = torch.from_numpy(pred.astype(np.int64))
    labels[0, :4] = 255  # ignored rows are not counted
    wrong = labels.clone()
    wrong[1] = (wrong[1] + 1) % autolabel.NUM_CLASSES
    total, correct = autolabel.confidence_counts(teacher, [(images, labels), (images, wrong)], (0.5, 1.0), False)
    valid = int((labels != 255).sum())
    assert total.sum() == 2 * valid and correct.sum() == valid + int((labels[0] != 255).sum())  # image 1 wrong once
    level = autolabel.confidence_to_u8(conf)
    assert total[int(pred[1, 0, 0]), int(level[1, 0, 0])] >= 2  # image 1 counted in both batches


def test_per_class_rule_needs_its_thresholds():
    cfg = autolabel.AutoLabelConfig(threshold_rule="per_class")
    with pytest.raises(ValueError, match="per_class needs the thresholds calibrated on 'val'"):
        cfg.refinement()
    thresholds = [0.5] * autolabel.NUM_CLASSES
    assert cfg.refinement(thresholds).thresholds().tolist() == thresholds
    assert autolabel.AutoLabelConfig().refinement().thresholds() == 0.9


def test_labels_of_another_teacher_are_not_resumed(teacher, jobs, tmp_path):
    stamp = {"teacher": autolabel.model_digest(teacher), "union_classes": (14, 15)}  # tuples too
    assert autolabel.prepare_output(tmp_path, stamp) is False
    autolabel.label_images(teacher, jobs, tmp_path, Refinement(), readers=0)
    assert autolabel.prepare_output(tmp_path, stamp) is False  # same teacher: labels stay, a rerun resumes
    assert len(list(tmp_path.rglob("*_autoLabelTrainIds.png"))) == 4
    other = build_model(ModelConfig(kind="hmsa", **TINY))
    assert autolabel.model_digest(other) != stamp["teacher"]
    assert autolabel.prepare_output(tmp_path, {**stamp, "teacher": autolabel.model_digest(other)}) is True
    assert not list(tmp_path.rglob("*.png"))
    counts = autolabel.label_images(other, jobs, tmp_path, Refinement(), readers=0)
    assert counts["labelled"] == 4


def test_without_held_out_truth_the_metrics_leave_the_figures_out_and_the_report_says_why(tmp_path):
    """A real coarse set (Cityscapes' train_extra) has no fine truth: DVC's metrics file stays
    valid JSON (no NaN) and the quality report names the reason."""
    import json

    from hmsa.pipelines.auto_labeling import nodes

    def save(name, array):
        Image.fromarray(np.array(array, dtype=np.uint8)).save(tmp_path / name)
        return name

    manifest = pd.DataFrame([{"label_path": save("label.png", [[0, 255]]), "confidence_path": save("conf.png", [[255, 0]]),
                              "prediction_path": save("pred.png", [[0, 0]]), "human_label_path": save("human.png", [[7, 0]]),
                              "heldout_fine_path": None}])
    summary, _, _, _, metrics, flat = nodes.label_quality(manifest, {"root": str(tmp_path)}, {"root": str(tmp_path)},
                                                         {"threshold": 0.9})
    assert metrics == {"auto_labels": {"images": 1}}
    json.dumps(metrics, allow_nan=False)  # what the catalog's metrics dataset does: raises on NaN
    assert flat == {}
    assert (summary["note"] == autolabel.NO_TRUTH).all()
