"""Check every file of a Cityscapes-layout tree and compute the statistics training needs.

For each (image, label file) pair found by :func:`hmsa.data.cityscapes.index_tree`, a
worker process opens and fully decodes both files, checks them, and computes per-class
pixel counts (on trainIds) and per-class centroids on a grid of tiles, which is what
class-uniform sampling needs (HMSA.md section 6). Nothing but these small results comes
back from the workers, so a tree of any size streams through in constant memory.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from hmsa.data.cityscapes import FileProblem, IndexEntry, TreeIndex
from hmsa.io.images import MAX_IMAGE_PIXELS
from hmsa.data.labels import CITYSCAPES, IGNORE_INDEX, LabelSet, label_set

log = logging.getLogger(__name__)

KEY_COLUMNS = ["split", "image_id", "label_kind"]


def count_columns(labels: LabelSet) -> list[str]:
    """The columns of a class pixel-count table: one per class, then ``ignore``."""
    return [*labels.class_names, "ignore"]


COUNT_COLUMNS = count_columns(CITYSCAPES)


class DataValidationError(ValueError):
    """Raised when a data tree has bad files (with ``on_bad_file: fail``) or an empty split."""

    def __init__(self, message: str, problems: list[FileProblem] | None = None):
        self.problems = problems or []
        super().__init__(message)


@dataclass(frozen=True)
class CentroidSpec:
    """Centroids are computed per class within each tile of a ``rows`` x ``cols`` grid."""

    rows: int = 2
    cols: int = 4
    min_pixels: int = 4


@dataclass
class _Checked:
    entry: IndexEntry
    height: int
    width: int
    counts: np.ndarray  # classes + 1 (ignore), int64
    centroids: np.ndarray  # (n, 5): train_id, tile, y, x, pixels


def _open_image(path: Path, what: str, modes: tuple[str, ...],
                max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Image.Image | None, str | None]:
    """Open and fully decode one PNG; return (image, None) or (None, problem). An image over
    ``max_pixels`` is refused from its header, before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # data.max_image_pixels speaks instead
            img = Image.open(path)
        with img:
            if img.width * img.height > max_pixels:
                return None, (f"{what} is {img.width} x {img.height} = {img.width * img.height:,} pixels, over "
                              f"data.max_image_pixels ({max_pixels:,}); downscale it, or raise data.max_image_pixels")
            img.load()  # decoding everything is what finds truncated files
            img = img.copy()
    except Image.DecompressionBombError as err:  # a header claiming more than Pillow will ever decode
        return None, f"{what} refused ({err}), over data.max_image_pixels ({max_pixels:,}); downscale it"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return None, f"unreadable or truncated {what} ({err}); re-download or regenerate the file"
    if img.mode not in modes:
        wanted = " or ".join(modes)
        hint = "convert it to RGB" if what == "image" else "labels must be single-channel label-id PNGs (not *_color.png)"
        return None, f"{what} has mode {img.mode}, expected {wanted}; {hint}"
    return img, None


def class_centroids(train_ids: np.ndarray, spec: CentroidSpec, num_classes: int = CITYSCAPES.num_classes) -> np.ndarray:
    """Per (tile, class) pixel count and centroid, for tiles of a ``spec.rows`` x ``spec.cols`` grid.

    Returns an int array of rows ``(train_id, tile, y, x, pixels)``; (tile, class) cells
    with fewer than ``spec.min_pixels`` pixels are left out, as is the ignore label.
    """
    height, width = train_ids.shape
    row_edges = [r * height // spec.rows for r in range(spec.rows + 1)]
    col_edges = [c * width // spec.cols for c in range(spec.cols + 1)]
    pixels = np.zeros((spec.rows, spec.cols, 256), dtype=np.int64)
    sum_y = np.zeros_like(pixels)
    sum_x = np.zeros_like(pixels)
    for r in range(spec.rows):
        y0, y1 = row_edges[r], row_edges[r + 1]
        for c in range(spec.cols):
            x0, x1 = col_edges[c], col_edges[c + 1]
            tile = train_ids[y0:y1, x0:x1].astype(np.intp)
            # class histograms per tile row and per tile column: plain bincounts over
            # small bins give exact counts and coordinate sums without per-pixel weights
            per_row = np.bincount((tile + 256 * np.arange(y1 - y0)[:, None]).ravel(),
                                  minlength=(y1 - y0) * 256).reshape(-1, 256)
            per_col = np.bincount((tile + 256 * np.arange(x1 - x0)[None, :]).ravel(),
                                  minlength=(x1 - x0) * 256).reshape(-1, 256)
            pixels[r, c] = per_row.sum(axis=0)
            sum_y[r, c] = np.arange(y0, y1) @ per_row
            sum_x[r, c] = np.arange(x0, x1) @ per_col
    pixels, sum_y, sum_x = (a[:, :, :num_classes].reshape(-1) for a in (pixels, sum_y, sum_x))
    found = np.flatnonzero(pixels >= max(1, spec.min_pixels))
    n = pixels[found]
    return np.stack(
        [found % num_classes, found // num_classes,
         np.rint(sum_y[found] / n), np.rint(sum_x[found] / n), n], axis=1,
    ).astype(np.int64).reshape(-1, 5)


def check_entry(root: Path, entry: IndexEntry, spec: CentroidSpec,
                labels: LabelSet = CITYSCAPES, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[_Checked | None, list[FileProblem]]:
    """Open, check and measure one (image, label) pair, its label ids read with ``labels``."""
    image, problem = _open_image(root / entry.image_path, "image", ("RGB",), max_pixels)
    if problem:
        return None, [FileProblem(entry.image_path, problem)]
    label, problem = _open_image(root / entry.label_path, f"{entry.label_kind} label", ("L", "P"), max_pixels)
    if problem:
        return None, [FileProblem(entry.label_path, problem)]
    if label.size != image.size:
        return None, [FileProblem(
            entry.label_path,
            f"label is {label.size[0]}x{label.size[1]} but its image {entry.image_path} is "
            f"{image.size[0]}x{image.size[1]} (width x height); labels must match their image",
        )]
    ids = np.asarray(label, dtype=np.uint8)
    unknown = labels.unknown_ids(ids)
    if unknown:
        return None, [FileProblem(
            entry.label_path,
            f"label ids {unknown} are not in {labels.id_range}; "
            "is this a trainId or colour image instead of a label-id PNG?",
        )]
    train_ids = labels.train_ids(ids)
    hist = np.bincount(train_ids.ravel(), minlength=256)
    counts = np.append(hist[: labels.num_classes], hist[IGNORE_INDEX]).astype(np.int64)
    return _Checked(entry, image.height, image.width, counts,
                    class_centroids(train_ids, spec, labels.num_classes)), []


def _check_batch(args: tuple[Path, list[IndexEntry], CentroidSpec, str, int]):
    root, entries, spec, labels, max_pixels = args
    return [check_entry(root, entry, spec, label_set(labels), max_pixels) for entry in entries]


@dataclass
class IngestResult:
    """Manifest, per-image class pixel counts, class centroids, and the files that failed."""

    manifest: pd.DataFrame
    class_pixels: pd.DataFrame
    centroids: pd.DataFrame
    problems: list[FileProblem]


def check_tree(
    root: Path,
    index: TreeIndex,
    spec: CentroidSpec = CentroidSpec(),
    workers: int = 1,
    batch_size: int = 16,
    labels: LabelSet = CITYSCAPES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> IngestResult:
    """Check every indexed pair in ``workers`` processes and gather the results; label ids
    are read with ``labels``.

    Layout problems already found by the index are carried into ``problems``.
    """
    root = Path(root)
    batches = [(root, index.entries[i : i + batch_size], spec, labels.name, max_pixels)
               for i in range(0, len(index.entries), batch_size)]
    rows, counts, centroids, problems = [], [], [], list(index.problems)
    bar = tqdm(total=len(index.entries), desc="ingest", unit="img", disable=None, mininterval=2)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(batches) > 1 else None
    try:
        results = pool.map(_check_batch, batches) if pool else map(_check_batch, batches)
        for batch in results:
            for checked, found in batch:
                problems.extend(found)
                bar.update(1)
                if checked is None:
                    continue
                entry = checked.entry
                labelled = 1.0 - checked.counts[-1] / max(1, checked.height * checked.width)
                rows.append({**asdict(entry), "height": checked.height, "width": checked.width,
                             "labelled_fraction": float(labelled)})
                counts.append(checked.counts)
                if len(checked.centroids):
                    keys = np.array([[entry.split, entry.image_id, entry.label_kind]] * len(checked.centroids), dtype=object)
                    centroids.append((keys, checked.centroids))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    manifest = pd.DataFrame(rows, columns=[*IndexEntry.__dataclass_fields__, "height", "width", "labelled_fraction"])
    pixel_table = pd.DataFrame(np.array(counts, dtype=np.int64).reshape(-1, labels.num_classes + 1),
                               columns=count_columns(labels))
    pixel_table = pd.concat([manifest[KEY_COLUMNS].reset_index(drop=True), pixel_table], axis=1)
    return IngestResult(manifest, pixel_table, centroid_frame(centroids), problems)


def centroid_frame(per_image: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """The class_centroids table: one row per (image, tile, class), the image named by the
    KEY_COLUMNS, from ``(keys, rows of class_centroids)`` pairs, one pair per image."""
    if per_image:
        keys = np.concatenate([k for k, _ in per_image])
        values = np.concatenate([v for _, v in per_image])
    else:
        keys, values = np.empty((0, 3), dtype=object), np.empty((0, 5), dtype=np.int64)
    table = pd.DataFrame(keys, columns=KEY_COLUMNS).astype(str)
    for i, name in enumerate(["train_id", "tile", "y", "x", "pixels"]):
        table[name] = values[:, i]
    return table


def describe_problems(problems: list[FileProblem], limit: int = 20) -> str:
    """One line per problem (at most ``limit``), for error messages and logs."""
    lines = [f"  {p.path}: {p.problem}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (see the skipped-files report with on_bad_file: skip)")
    return "\n".join(lines)


def apply_bad_file_policy(
    result: IngestResult, index: TreeIndex, root: Path, on_bad_file: str, expected_splits: list[str]
) -> tuple[IngestResult, pd.DataFrame]:
    """Fail on bad files, or drop them and report which (``on_bad_file``: fail | skip).

    An empty split is an error either way: there is nothing to skip to.
    Returns the result (bad files removed) and a table of skipped files and reasons.
    """
    empty = list(index.empty_splits)
    if empty:
        raise DataValidationError(
            "Empty split(s) " + ", ".join(f"'{s}' (no images under {Path(root) / 'leftImg8bit' / s})" for s in empty)
            + ". Put the images there, or remove the split from data.splits."
        )
    if result.problems and on_bad_file == "fail":
        raise DataValidationError(
            f"{len(result.problems)} bad file(s) under {root}:\n{describe_problems(result.problems)}\n"
            "Fix or remove these files, or set data.on_bad_file: skip to leave them out.",
            result.problems,
        )
    skipped = pd.DataFrame([asdict(p) for p in result.problems], columns=["path", "problem"]).drop_duplicates()
    if result.problems:
        log.warning("Skipped %d bad file(s) (data.on_bad_file: skip):\n%s",
                    len(result.problems), describe_problems(result.problems))
    emptied = sorted(set(expected_splits) - set(result.manifest["split"]))
    if emptied:
        raise DataValidationError(
            f"No good file is left in split(s) {emptied}:\n{describe_problems(result.problems)}\n"
            "Fix these files; skipping cannot help when a whole split is bad.",
            result.problems,
        )
    return result, skipped
