"""``hmsa predict``: segment your own images with a trained model.

    hmsa predict photos/ --out predictions/
    hmsa predict a.jpg b.png --model data/06_models/student.pt --scales 0.5 1 2 --flip

The model comes from an MLflow URI (default: the champion student of the project's
environment, ``models:/hmsa-student@champion``) or from a model bundle / checkpoint file.
MLflow models come from the store ``kedro run`` uses: ``MLFLOW_TRACKING_URI`` or the
project's mlflow.yml (``--env`` picks conf/<env>), unless ``--tracking-uri`` names another.
For each image ``<stem>``, it writes ``<stem>_color.png`` (trainId colours),
``<stem>_labelIds.png`` (Cityscapes label ids) and, for HMSA models, ``<stem>_attention.png``
(each scale's attention over the image).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hmsa.io import images as image_io
from hmsa.io.images import MAX_IMAGE_PIXELS, ImageError
from hmsa.data.labels import label_set_for
from hmsa.models.fusion import DEFAULT_MAX_SCALE as MAX_SCALE

DEFAULT_MODEL = "models:/hmsa-student@champion"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class PredictError(RuntimeError):
    """Bad input to ``hmsa predict``; the message names it and says what to do."""


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The images named, or found (recursively) in the folders named, sorted."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise PredictError(f"{item}: no .png or .jpg images in this folder")
            images += found
        elif item.is_file():
            images.append(item)
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not images:
        raise PredictError("no input images: give image files or folders")
    return images


def load_model(source: str, tracking_uri: str | None = None, env: str | None = None) -> torch.nn.Module:
    """A Segmenter from an MLflow model URI or a model bundle / checkpoint file. MLflow models
    come from ``tracking_uri``, else from the store ``kedro run --env env`` uses
    (``hmsa.mlops.tracking.tracking_uri``)."""
    from hmsa.models.bundle import ModelMismatchError, model_from_bundle
    from hmsa.training import checkpoint

    if "://" not in source and not source.startswith("models:/") and not source.startswith("runs:/"):
        path = Path(source)
        if not path.is_file():
            raise PredictError(f"--model {source}: no such file; give a model bundle (data/06_models/student.pt), "
                               f"a checkpoint (best.pt) or an MLflow URI such as {DEFAULT_MODEL}")
        try:
            bundle = checkpoint.load(path)
        except checkpoint.CheckpointError as err:
            raise PredictError(f"--model {err}") from None
        if not isinstance(bundle, dict) or not {"model_config", "state_dict"} <= set(bundle):
            raise PredictError(f"--model {source}: not a model bundle or checkpoint (needs model_config, state_dict)")
        try:
            return model_from_bundle(bundle, f"--model {source}")
        except ModelMismatchError as err:
            raise PredictError(str(err)) from None
    import mlflow

    from hmsa.mlops import tracking
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    else:
        tracking.use_project_store(env=env)
    try:
        tracking.check_store(mlflow.get_tracking_uri())
    except tracking.StoreError as err:
        raise PredictError(f"--model {source}: {err}") from None
    try:
        return tracking.load_segmenter(source)
    except tracking.ModelNotFoundError as err:
        raise PredictError(
            f"--model {err} Run `make run` first (it trains, registers and evaluates the models), pass "
            "--tracking-uri, or give a model file with --model data/06_models/student.pt"
        ) from None
    except tracking.ModelLoadError as err:
        raise PredictError(f"--model {err}") from None


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """The image as the model's input, (3, H, W) in [0, 1] (greyscale, 16-bit and RGBA
    converted; over ``max_pixels`` refused before it is decoded)."""
    try:
        return image_io.read_image(path, max_pixels, "--max-pixels")
    except ImageError as err:
        raise PredictError(str(err)) from None


def attention_picture(image: np.ndarray, attention: dict[float, np.ndarray]) -> np.ndarray:
    """Side by side, per scale but the highest: the image tinted by that scale's attention
    (bright = that scale's prediction is trusted there)."""
    tiles = []
    for scale in sorted(attention)[:-1] or sorted(attention):
        a = np.clip(attention[scale], 0, 1)[..., None]
        heat = np.concatenate([a, a * 0.35, 1 - a], axis=-1) * 255
        tiles.append((0.45 * image + 0.55 * heat).astype(np.uint8))
    return np.concatenate(tiles, axis=1)


def _save(array: np.ndarray, path: Path) -> None:
    try:
        image_io.write_png_atomic(array, path)
    except OSError as err:  # a read-only folder, a full disk: named, with what to do
        raise PredictError(f"{path}: cannot write it ({err.strerror or err}); give an --out folder you can write "
                           "to, with free space") from None


class PartialPredictError(PredictError):
    """Some images could not be read; every other one was segmented and written."""

    def __init__(self, message: str, written: list[Path]):
        super().__init__(message)
        self.written = written


def output_folder(out: Path) -> Path:
    """``out``, created if missing; a file there, or a folder that cannot be made, is named."""
    if out.exists() and not out.is_dir():
        raise PredictError(f"--out {out}: is a file, not a folder; give a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PredictError(f"--out {out}: cannot create it ({err.strerror or err}); give a folder you can write to") \
            from None
    return out


def predict(images: Sequence[Path], model: torch.nn.Module, out: Path, scales: Sequence[float] = (0.5, 1.0, 2.0),
            flip: bool = False, device: str = "auto", batch_size: int = 1, progress: bool = True,
            max_pixels: int = MAX_IMAGE_PIXELS, max_scale: float = MAX_SCALE) -> list[Path]:
    """Segment ``images`` and write the three PNGs of each under ``out``; returns the files written.

    An image that cannot be read is skipped: every other one is written, then a
    PartialPredictError names the skipped ones (and carries the files written)."""
    from hmsa.evaluation.grid import batches_of
    from hmsa.models.fusion import check_scales
    from hmsa.models.segmenter import NonFiniteOutputError, require_finite
    from hmsa.runtime.device import pick_device

    try:
        scales = check_scales(scales, max_scale, "--max-scale")
    except ValueError as err:
        raise PredictError(f"--scales: {err}") from None
    dev = pick_device(device)
    model = model.to(dev).eval()
    labels_of = label_set_for(model.cfg.num_classes)  # colours and label ids: Cityscapes' or Mapillary's
    out = output_folder(out)
    names = output_names(images)
    written: list[Path] = []
    unreadable: list[str] = []

    def readable():
        for i, path in enumerate(images):
            try:
                yield read_image(path, max_pixels), torch.tensor(i)
            except PredictError as err:
                unreadable.append(str(err))
                bar.update(1)

    bar = tqdm(total=len(images), desc="predicting", unit="img", disable=not progress)
    for batch, index in batches_of(readable(), batch_size):
        result = model.predict(batch.to(dev), scales, flip)
        try:
            require_finite(result["logits"], f"the model, on {images[int(index[0])]}")
        except NonFiniteOutputError as err:
            raise PredictError(str(err)) from None
        labels = result["logits"].argmax(1).to(torch.uint8).cpu().numpy()
        for j, i in enumerate(index.tolist()):
            files = {kind: out / f"{names[i]}_{kind}.png" for kind in ("color", "labelIds", "attention")}
            _save(labels_of.palette[labels[j]], files["color"])
            _save(labels_of.label_ids(labels[j]), files["labelIds"])
            written += [files["color"], files["labelIds"]]
            if result["attention"]:
                image = (batch[j].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                attn = {s: a[j, 0].cpu().numpy() for s, a in result["attention"].items()}
                _save(attention_picture(image, attn), files["attention"])
                written.append(files["attention"])
        bar.update(len(index))
    bar.close()
    if unreadable:
        raise PartialPredictError(
            f"{len(unreadable)} of {len(images)} images could not be read (the other {len(images) - len(unreadable)} "
            f"are written, {len(written)} files in {out}):\n  " + "\n  ".join(unreadable), written)
    return written


#: characters an output name keeps; any other run of characters becomes one "_"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_names(images: Sequence[Path]) -> list[str]:
    """A name per image for its output files: its stem made safe (no separators, no leading
    dots, never empty, so ``..png`` cannot write outside ``--out``) and unique among all of them
    (``x``, ``x_1``, ... skipping any name already taken, ``x_1.png``'s own included)."""
    taken: set[str] = set()
    names = []
    for path in images:
        base = _UNSAFE.sub("_", path.stem).lstrip(".") or "image"
        name, n = base, 0
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
    return names


def _check_env(env: str | None) -> None:
    """``--env`` names a folder under the project's conf/ (Kedro would quietly use conf/base)."""
    from hmsa.mlops.tracking import project_root

    root = project_root()
    if env and root and not (root / "conf" / env).is_dir():
        envs = sorted(p.name for p in (root / "conf").iterdir() if p.is_dir() and p.name not in ("base", "local"))
        raise PredictError(f"--env {env}: there is no conf/{env}/ in {root}; the environments are: {', '.join(envs)}")


def main(argv: list[str] | None = None) -> int:
    """``hmsa predict ...``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="hmsa", description="Hierarchical multi-scale attention segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="segment your own images", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files (png, jpg) or folders of them")
    p.add_argument("--model", default=None,
                   help=f"MLflow model URI or model file (default: the environment's champion, {DEFAULT_MODEL})")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default predictions/)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="inference scales, with 1.0")
    p.add_argument("--flip", action="store_true", help="also predict the mirrored image and average")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images only)")
    p.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help=f"refuse images with more pixels than this, before decoding them (default {MAX_IMAGE_PIXELS:,})")
    p.add_argument("--max-scale", type=float, default=MAX_SCALE,
                   help=f"the largest inference scale allowed (default {MAX_SCALE:g}; memory grows with its square)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: MLFLOW_TRACKING_URI, else the project's mlflow.yml: sqlite:///mlflow.db)")
    p.add_argument("--env", default=None, help="the Kedro environment whose store and model names to use (default: local)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = sub.add_parser("serve", help="serve a model over HTTP (MLflow's scoring server, with a request-size limit)",
                       description=serve_doc())
    s.add_argument("--model", default=None,
                   help=f"MLflow model URI (default: the environment's champion, {DEFAULT_MODEL})")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5001)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--max-request-bytes", type=int, default=None,
                   help="refuse larger request bodies (default: the model's serving.max_request_bytes)")
    s.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: MLFLOW_TRACKING_URI, else the project's mlflow.yml: sqlite:///mlflow.db)")
    s.add_argument("--env", default=None, help="the Kedro environment whose store and model names to use (default: local)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}")
        images = find_images(args.inputs)
        _check_env(args.env)
        if args.model is None:
            from hmsa.mlops.tracking import champion_uri

            args.model = champion_uri(env=args.env)
        model = load_model(args.model, args.tracking_uri, args.env)
        written = predict(images, model, args.out, args.scales, args.flip, args.device, args.batch_size,
                          not args.no_progress, args.max_pixels, args.max_scale)
    except PartialPredictError as err:
        print(f"hmsa predict: error: {err}", file=sys.stderr)
        print(f"{len(images)} images -> {len(err.written)} files in {args.out}")
        return 2
    except PredictError as err:
        print(f"hmsa predict: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(images)} images -> {len(written)} files in {args.out}")
    return 0


def serve_doc() -> str:
    from hmsa.mlops import serving_app
    return serving_app.__doc__


def _serve(args) -> int:
    """``hmsa serve``: the model is checked (it exists, it loads) before the server starts."""
    from hmsa.mlops import serving_app
    try:
        _check_env(args.env)
        if args.model is None:
            from hmsa.mlops.tracking import champion_uri

            args.model = champion_uri(env=args.env)
        if not args.model.startswith(("models:/", "runs:/")) and "://" not in args.model:
            raise PredictError(f"--model {args.model}: give an MLflow model URI such as {DEFAULT_MODEL} (a model file "
                               "has no MLflow model around it to serve)")
        load_model(args.model, args.tracking_uri, args.env)
    except PredictError as err:
        print(f"hmsa serve: error: {err}", file=sys.stderr)
        return 2
    return serving_app.serve(args.model, args.host, args.port, args.workers, args.max_request_bytes)


if __name__ == "__main__":
    sys.exit(main())
