"""Bad input through `kedro run`, as a user meets it: a non-zero exit, a message that names the
thing and what to do, and the earlier good outputs untouched (nothing partial, nothing lost).
One row each of the table in docs/reliability.md."""

import hashlib
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import run, tiny_project


def _snapshot(project) -> dict[str, str]:
    data = project / "data"
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    return tiny_project(tmp_path_factory.mktemp("bad_input") / "project", "data_ingestion")


def _cityscapes_copy(project, tmp_path, damage=None):
    """A Cityscapes-layout copy of the ingested SynthCity tree, optionally damaged."""
    root = tmp_path / "cityscapes"
    shutil.copytree(project / "data/01_raw/synthcity", root)
    if damage:
        damage(root)
    return root


def _truncate_first_val_image(root):
    image = sorted((root / "leftImg8bit/val").rglob("*.png"))[0]
    image.write_bytes(image.read_bytes()[:300])


def _empty_val_split(root):
    for folder in ("leftImg8bit/val", "gtFine/val"):
        shutil.rmtree(root / folder)
        (root / folder).mkdir()


CASES = {
    "unknown parameter block": (["--params", "studnet.trainer.seed=1"], None, r"Unknown parameter block(s) ['studnet']"),
    "unknown parameter key": (["--params", "student.trainer.epohcs=3"], None, "student.trainer.epohcs: unknown parameter"),
    "wrong type": (["--params", "teacher.trainer.lr=fast"], None, "teacher.trainer.lr: Input should be a valid number"),
    "zero scale": (["--params", "student.model.lo_scale=0"], None, "student.model.lo_scale: Input should be greater than 0"),
    "threshold outside [0, 1]": (["--params", "auto_labeling.threshold=1.5"], None, "auto_labeling.threshold"),
    "scales without 1.0": ([], {"evaluation": {"scale_sets": [[0.5, 2.0]]}}, "1.0 must be in the list"),
    "cityscapes root not set": (["--params", "data.source=cityscapes"], None, "cityscapes_root must be set"),
    "cityscapes root missing": (["--params", "data.source=cityscapes,data.cityscapes_root={tmp}/nowhere"], None,
                                "does not exist. Set it to the folder that holds leftImg8bit/"),
    "truncated image": (["--params", "data.source=cityscapes,data.cityscapes_root={truncated}"], None,
                        "_leftImg8bit.png: unreadable or truncated image"),
    "empty split": (["--params", "data.source=cityscapes,data.cityscapes_root={empty}"], None,
                    "Empty split(s) 'val'"),
    "unreadable MLflow store": ([], "broken-store", "cannot be read: file is not a database"),
    "unknown environment": (["--env", "prodution"], None, "--env prodution: there is no conf/prodution/"),
    "unknown pipeline": (["--pipelines", "nosuch"], None, "--pipelines nosuch: no such pipeline. The pipelines are: "
                         "auto_labeling, data_ingestion, evaluation, student_training, teacher_training"),
    "a stage's input never made": (["--pipelines", "teacher_training"], "no-manifest",
                                   "image_manifest.parquet), which no earlier run has made. Run the stage that "
                                   "makes it first: kedro run --pipelines data_ingestion"),
    "a bad value from conf/local": ([], {"teacher": {"trainer": {"lr": "fast"}}},
                                    "(got 'fast') (set in conf/local/parameters.yml)"),
    "a bad value from --params": (["--params", "teacher.trainer.lr=fast"], None, "(got 'fast') (set in --params)"),
    "a label edited after ingestion": (["--pipelines", "teacher_training"], "edited-label",
                                       "changed after data_ingestion recorded it (DVC hash "),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_the_run_and_keeps_the_good_outputs(ingested, tmp_path, case):
    project = shutil.copytree(ingested, tmp_path / "project")
    args, setup, message = CASES[case]
    values = {"tmp": tmp_path,
              "truncated": _cityscapes_copy(project, tmp_path / "t", _truncate_first_val_image),
              "empty": _cityscapes_copy(project, tmp_path / "e", _empty_val_split)}
    if isinstance(setup, dict):  # a user's override file in conf/local
        (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(setup))
    elif setup == "broken-store":
        (project / "mlflow.db").write_bytes(b"this is not an SQLite file")
    elif setup == "edited-label":
        label = sorted((project / "data/01_raw/synthcity/gtFine/train").rglob("*_labelIds.png"))[0]
        ids = np.asarray(Image.open(label)).copy()
        ids[0, 0] = 7 if ids[0, 0] != 7 else 8
        Image.fromarray(ids).save(label)
    elif setup == "no-manifest":
        (project / "data/03_primary/image_manifest.parquet").unlink()
    before = _snapshot(project)

    pipelines = [] if "--pipelines" in args else ["--pipelines", "data_ingestion"]
    result = run(["kedro", "run", *pipelines, *[a.format(**values) for a in args]], project, check=False)
    said = " ".join((result.stdout + result.stderr).split())  # undo the console's line wrapping
    assert result.returncode != 0, f"{case}: the run succeeded"
    assert message in said, f"{case}: {said[-1500:]}"
    assert _snapshot(project) == before  # nothing written, nothing lost
