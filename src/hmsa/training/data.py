"""Torch data sets over the ingestion manifests, with the paper's augmentation.

Training samples: random scale (0.5-2.0), random crop padded with ignore, horizontal flip
and colour jitter, applied with torchvision.transforms.v2 to an (Image, Mask) pair so image
and label stay aligned. With class-uniform sampling (HMSA.md section 6), half of the
samples are crops centred on a class centroid, the class drawn uniformly; the draw happens
inside ``__getitem__`` from torch's RNG, so it works unchanged in DataLoader workers and
under DistributedSampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hmsa.data.ingest import KEY_COLUMNS
from hmsa.data.labels import IGNORE_INDEX, label_set
from hmsa.io.files import under

LABEL_FORMATS = ("label_ids", "train_ids")


@dataclass(frozen=True)
class Item:
    """One training or validation pair: absolute paths and how the label is coded (label ids
    of the label set ``labels``, or trainIds)."""

    image: str
    label: str
    label_format: str = "label_ids"
    labels: str = "cityscapes"


def items_from_manifest(manifest: pd.DataFrame, root: str | Path, label_format: str = "label_ids",
                        label_root: str | Path | None = None, labels: str = "cityscapes") -> list[Item]:
    """Items for the manifest rows: images under ``root``, labels under ``label_root`` (default
    ``root``); refuses paths that leave their root."""
    label_root = label_root if label_root is not None else root
    return [Item(str(under(root, row.image_path)), str(under(label_root, row.label_path)), label_format, labels)
            for row in manifest.itertuples(index=False)]


def _train_ids(item: Item, ids: np.ndarray) -> np.ndarray:
    return label_set(item.labels).train_ids(ids) if item.label_format == "label_ids" else ids.astype(np.uint8)


def label_pixel_totals(items: list[Item]) -> np.ndarray:
    """Pixels of each class in the items' label files (for labels without a count table)."""
    num_classes = label_set(items[0].labels).num_classes if items else 0
    totals = np.zeros(num_classes, dtype=np.int64)
    for item in items:
        with Image.open(item.label) as lab:
            ids = np.asarray(lab)
        totals += np.bincount(_train_ids(item, ids).ravel(), minlength=256)[:num_classes]
    return totals


def load_pair(item: Item) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """The image (uint8, 3xHxW) and its trainId mask (uint8, HxW)."""
    with Image.open(item.image) as img:
        image = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()
    with Image.open(item.label) as lab:
        ids = np.asarray(lab)
    train_ids = _train_ids(item, ids)
    return tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(train_ids)))


def to_model_input(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image -> float in [0, 1]; mask -> int64."""
    return image.as_subclass(torch.Tensor).float().div_(255), mask.as_subclass(torch.Tensor).long()


class TrainDataset(Dataset):
    """Augmented training crops; optionally class-uniform (see the module docstring)."""

    def __init__(self, items: list[Item], crop: tuple[int, int], scale_range: tuple[float, float] = (0.5, 2.0),
                 color_jitter: float = 0.25, centroids: pd.DataFrame | None = None,
                 class_uniform: bool = False, epoch_length: int | None = None):
        if not items:
            raise ValueError("the training set is empty: check the manifests and data.splits")
        self.items = items
        self.crop = tuple(crop)
        self.scale_range = scale_range
        self.jitter = v2.ColorJitter(color_jitter, color_jitter, color_jitter, 0.02) if color_jitter > 0 else None
        self.flip = v2.RandomHorizontalFlip(0.5)
        self.class_uniform = class_uniform
        self.epoch_length = epoch_length or len(items)
        # class -> array of (item index, y, x) rows, for centred crops
        self.by_class: dict[int, np.ndarray] = {}
        if class_uniform:
            if centroids is None or centroids.empty:
                raise ValueError("class-uniform sampling needs the class_centroids table from data_ingestion")
            for cls, group in centroids.groupby("train_id"):
                self.by_class[int(cls)] = group[["item", "y", "x"]].to_numpy()

    def __len__(self) -> int:
        return self.epoch_length

    def _pick(self, index: int) -> tuple[int, tuple[int, int] | None]:
        if self.class_uniform and index % 2 == 1 and self.by_class:
            classes = sorted(self.by_class)
            rows = self.by_class[classes[int(torch.randint(len(classes), ()).item())]]
            item, y, x = rows[int(torch.randint(len(rows), ()).item())]
            return int(item), (int(y), int(x))
        if self.epoch_length == len(self.items):
            return index, None
        return int(torch.randint(len(self.items), ()).item()), None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item, centre = self._pick(index)
        image, mask = load_pair(self.items[item])
        image, mask = self._scale_and_crop(image, mask, centre)
        image, mask = self.flip(image, mask)
        if self.jitter is not None:
            image = self.jitter(image)
        return to_model_input(image, mask)

    def _scale_and_crop(self, image, mask, centre):
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        height, width = image.shape[-2:]
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = TF.resize(image, size, antialias=True)
        mask = TF.resize(mask, size)  # a Mask is resized with nearest neighbour
        ch, cw = self.crop
        pad_h, pad_w = max(0, ch - size[0]), max(0, cw - size[1])
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
        h, w = image.shape[-2:]
        if centre is None:
            top = int(torch.randint(h - ch + 1, ()))
            left = int(torch.randint(w - cw + 1, ()))
        else:
            cy, cx = centre[0] * scale, centre[1] * scale
            jitter_y, jitter_x = (float(torch.rand(())) - 0.5) * ch / 2, (float(torch.rand(())) - 0.5) * cw / 2
            top = int(min(max(cy - ch / 2 + jitter_y, 0), h - ch))
            left = int(min(max(cx - cw / 2 + jitter_x, 0), w - cw))
        return TF.crop(image, top, left, ch, cw), TF.crop(mask, top, left, ch, cw)


class EvalDataset(Dataset):
    """Whole images and masks, no augmentation."""

    def __init__(self, items: list[Item]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_model_input(*load_pair(self.items[index]))


def class_pixel_totals(class_pixels: pd.DataFrame) -> np.ndarray:
    """Total pixels of each class over the given rows of class_pixel_counts (its columns
    after the keys are the classes, then ``ignore``)."""
    classes = [c for c in class_pixels.columns if c not in (*KEY_COLUMNS, "ignore")]
    return class_pixels[classes].to_numpy().sum(axis=0)
