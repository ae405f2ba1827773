"""`hmsa predict`: your own images in, coloured, label-id and attention PNGs out."""

import numpy as np
import pytest
import torch
from PIL import Image

from hmsa.commands import predict
from hmsa.data.labels import CITYSCAPES
from hmsa.models import ModelConfig, build_model
from hmsa.training import checkpoint
from tests.models.conftest import TINY


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hmsa", **TINY))
    path = tmp_path / "student.pt"
    checkpoint.save_atomic({"model_config": model.cfg.model_dump(), "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 72, 3), dtype=np.uint8)).save(folder / "street.png")
    Image.fromarray(rng.integers(0, 255, (33, 50, 3), dtype=np.uint8)).save(folder / "sub" / "odd.jpg")
    Image.fromarray(rng.integers(0, 255, (33, 50), dtype=np.uint8)).save(folder / "sub" / "grey.png")
    return folder


def test_a_folder_of_mixed_sizes_gives_three_pngs_each(model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    status = predict.main(["predict", str(photos), "--model", str(model_file), "--out", str(out),
                           "--scales", "0.5", "1", "--batch-size", "2", "--no-progress"])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem}_{kind}.png" for stem in ("street", "odd", "grey")
                           for kind in ("color", "labelIds", "attention"))
    label_ids = np.asarray(Image.open(out / "odd_labelIds.png"))
    assert label_ids.shape == (33, 50) and CITYSCAPES.train_ids(label_ids).max() < 19
    assert np.asarray(Image.open(out / "street_color.png")).shape == (40, 72, 3)
    assert np.asarray(Image.open(out / "street_attention.png")).shape == (40, 72, 3)  # one tile: scale 0.5
    assert "3 images -> 9 files" in capsys.readouterr().out


def test_same_labels_as_the_model_predicts(model_file, photos, tmp_path):
    model = predict.load_model(str(model_file))
    out = tmp_path / "out"
    predict.predict([photos / "street.png"], model, out, (0.5, 1.0, 2.0), flip=True, device="cpu", progress=False)
    image = torch.from_numpy(np.array(Image.open(photos / "street.png"))).permute(2, 0, 1).float().div(255)
    expected = model.predict(image[None], (0.5, 1.0, 2.0), True)["logits"].argmax(1)[0].numpy()
    got = CITYSCAPES.train_ids(np.asarray(Image.open(out / "street_labelIds.png")))
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("args, message", [
    (["{empty}"], "no .png or .jpg images"),
    (["{photos}", "--model", "{tmp}/missing.pt"], "no such file"),
    (["{photos}", "--model", "models:/nothing@champion", "--tracking-uri", "sqlite:///{tmp}/none.db"],
     "there is no registered model 'nothing'"),
    (["{photos}", "--tracking-uri", "http://127.0.0.1:9"], "The MLflow tracking server http://127.0.0.1:9 does not answer"),
    (["{photos}", "--tracking-uri", "sqlite:///{tmp}/broken.db"], "broken.db) cannot be read: file is not a database"),
    (["{photos}", "--env", "prodution"], "--env prodution: there is no conf/prodution/"),
    (["{photos}", "--model", "{model}", "--out", "{model}"], "is a file, not a folder"),
    (["{photos}", "--model", "{model}", "--scales", "0.5", "2"], "1.0 must be in the list"),
    (["{broken}", "--model", "{model}"], "cannot read this image"),
    (["{photos}", "--model", "{other_classes}"], "the weights do not fit its model"),
    (["{photos}", "--model", "{truncated}"], "cannot be loaded as a checkpoint"),
])
def test_clear_errors(model_file, photos, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "broken.db").write_bytes(b"not an SQLite database")
    # weights of a 19-class model under a configuration that says 7 classes
    bundle = checkpoint.load(model_file)
    checkpoint.save_atomic({**bundle, "model_config": {**bundle["model_config"], "num_classes": 7}},
                           tmp_path / "other.pt")
    (tmp_path / "truncated.pt").write_bytes(model_file.read_bytes()[:500])
    values = {"empty": tmp_path / "empty", "photos": photos, "tmp": tmp_path, "model": model_file,
              "broken": tmp_path / "broken.png", "other_classes": tmp_path / "other.pt",
              "truncated": tmp_path / "truncated.pt"}
    argv = ["predict", *[a.format(**values) for a in args], "--no-progress"]
    argv += [] if "--out" in args else ["--out", str(tmp_path / "out")]
    assert predict.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_mapillary_model_writes_mapillary_ids_and_colours(photos, tmp_path):
    from hmsa.data.labels import MAPILLARY

    torch.manual_seed(1)
    model = build_model(ModelConfig(kind="hmsa", **TINY, num_classes=65)).eval()
    out = tmp_path / "out"
    predict.predict([photos / "street.png"], model, out, (1.0,), flip=False, device="cpu", progress=False)
    image = torch.from_numpy(np.array(Image.open(photos / "street.png"))).permute(2, 0, 1).float().div(255)
    expected = model.predict(image[None], (1.0,))["logits"].argmax(1)[0].numpy()
    # Mapillary's label ids are its trainIds; its colours, not Cityscapes'
    assert np.array_equal(np.asarray(Image.open(out / "street_labelIds.png")), expected)
    colours = np.asarray(Image.open(out / "street_color.png"))
    assert np.array_equal(colours, MAPILLARY.palette[expected])


def test_a_registered_model_without_the_alias_is_named_with_the_aliases_it_has(model_file, photos, tmp_path, capsys,
                                                                                monkeypatch):
    """The default model is the environment's champion, from the store MLFLOW_TRACKING_URI
    names; before an evaluation has set it, the error says which aliases exist and what to do."""
    import mlflow

    from hmsa.mlops.tracking import log_and_register

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        experiment = mlflow.MlflowClient().create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            log_and_register(checkpoint.load(model_file), "hmsa-student", pip_requirements=[])
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    # (mlflow.set_tracking_uri sets it too) read through conf/base/mlflow.yml, as kedro run reads it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = tmp_path / "out"
    assert predict.main(["predict", str(photos), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "models:/hmsa-student@champion: hmsa-student has no alias 'champion' (its aliases: newest -> version 1)" in err
    assert "kedro run --pipelines evaluation" in err and "models:/hmsa-student@newest" in err
    assert not out.exists()  # nothing written
    assert predict.main(["predict", str(photos), "--model", "models:/hmsa-student@newest", "--out", str(out),
                         "--no-progress"]) == 0
    assert len(list(out.glob("*_labelIds.png"))) == 3


def test_output_names_stay_inside_out_and_never_collide(model_file, tmp_path):
    """``..png`` would name ``out/.`` (its outputs in out's parent); ``a/x.png``, ``b/x.png`` and
    ``c/x_1.png`` would give ``x``, ``x_1`` and ``x_1`` (one image's outputs overwritten)."""
    photos = tmp_path / "photos"
    rng = np.random.default_rng(1)
    names = ["..png", "a/x.png", "b/x.png", "c/x_1.png", "d/we ird:name.png"]
    for name in names:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(photos / name, format="PNG")
    out = tmp_path / "nest" / "out"
    assert predict.main(["predict", str(photos), "--model", str(model_file), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "nest").iterdir()) == ["out"]  # nothing beside --out
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 * len(names)  # three files per image: none overwritten
    assert {name.rsplit("_", 1)[0] for name in written} == {"image", "x", "x_1", "x_1_1", "we_ird_name"}


def test_an_unreadable_image_is_reported_after_every_good_one_is_written(model_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(photos / name, format="PNG")
    (photos / "b.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert predict.main(["predict", str(photos), "--model", str(model_file), "--out", str(out), "--no-progress"]) == 2
    said = capsys.readouterr()
    assert "1 of 3 images could not be read" in said.err and "b.png: cannot read this image" in said.err
    assert sorted(p.name for p in out.glob("*_labelIds.png")) == ["a_labelIds.png", "c_labelIds.png"]
    assert "3 images -> 6 files" in said.out  # the summary counts what exists


def test_an_output_folder_that_cannot_be_written_is_named(model_file, photos, tmp_path, capsys, monkeypatch):
    import errno

    def refused(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("hmsa.io.images.atomic_path", refused)  # as a read-only folder refuses (root ignores chmod)
    out = tmp_path / "out"
    assert predict.main(["predict", str(photos), "--model", str(model_file), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "_color.png: cannot write it (Permission denied); give an --out folder you can write to" in err


def test_limits_and_unsupported_images_are_refused_by_name(model_file, photos, tmp_path, capsys):
    """Scales and image sizes over the limits are refused before any work, naming the option
    that raises them; a 16-bit image is predicted as its 8-bit equivalent."""
    from tests.data.test_images import png_header_only

    out = tmp_path / "out"
    assert predict.main(["predict", str(photos), "--model", str(model_file), "--scales", "1", "80", "--out",
                         str(out), "--no-progress"]) == 2
    assert "--scales: scales: 80 is over --max-scale (4)" in capsys.readouterr().err
    assert not out.exists()
    bomb = tmp_path / "bomb" / "huge.png"
    bomb.parent.mkdir()
    png_header_only(bomb, 14000, 14000)
    assert predict.main(["predict", str(bomb), "--model", str(model_file), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "huge.png: refused, Image size (196000000 pixels)" in err and "over --max-pixels" in err
    # 16-bit greyscale: the same labels as the 8-bit image it scales to
    deep = (np.random.default_rng(1).integers(0, 256, (40, 72)) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray((deep // 257).astype(np.uint8)).save(tmp_path / "eight.png")
    assert predict.main(["predict", str(tmp_path / "deep.png"), str(tmp_path / "eight.png"), "--model",
                         str(model_file), "--out", str(out), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "deep_labelIds.png")),
                          np.asarray(Image.open(out / "eight_labelIds.png")))


def test_a_model_with_non_finite_logits_writes_nothing(tmp_path, photos, capsys):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hmsa", **TINY))
    state = {k: (v.fill_(float("nan")) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = tmp_path / "broken.pt"
    checkpoint.save_atomic({"model_config": model.cfg.model_dump(), "state_dict": state}, path)
    out = tmp_path / "out"
    assert predict.main(["predict", str(photos), "--model", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "of the logits are NaN or infinite" in capsys.readouterr().err
    assert list(out.glob("*.png")) == []
