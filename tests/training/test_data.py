import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hmsa.training.data import EvalDataset, Item, TrainDataset, items_from_manifest


def _write_pair(tmp_path, name="a", size=(40, 60)):
    """An image whose red channel is 10 x the trainId of the mask: alignment is checkable."""
    h, w = size
    labels = np.zeros((h, w), dtype=np.uint8)
    labels[:, w // 2:] = 2
    labels[h // 2:, : w // 3] = 5
    labels[5:8, 40:43] = 13
    image = np.stack([labels * 10, np.full_like(labels, 50), np.full_like(labels, 90)], axis=-1)
    Image.fromarray(image).save(tmp_path / f"{name}.png")
    Image.fromarray(labels).save(tmp_path / f"{name}_label.png")
    return Item(str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}_label.png"), "train_ids"), labels


def test_crop_flip_keep_image_and_mask_aligned(tmp_path):
    item, _ = _write_pair(tmp_path)
    torch.manual_seed(0)
    data = TrainDataset([item], crop=(32, 32), scale_range=(1.0, 1.0), color_jitter=0.0)
    for _ in range(10):
        image, mask = data[0]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64
        assert torch.equal(torch.round(image[0] * 255 / 10).long(), mask)


def test_random_scale_keeps_alignment_up_to_boundaries(tmp_path):
    item, _ = _write_pair(tmp_path)
    torch.manual_seed(1)
    data = TrainDataset([item], crop=(48, 48), scale_range=(0.5, 2.0), color_jitter=0.0)
    for _ in range(10):
        image, mask = data[0]
        valid = mask != 255
        agree = (torch.round(image[0] * 255 / 10).long() == mask)[valid].float().mean()
        assert agree > 0.9


def test_small_images_are_padded_with_ignore(tmp_path):
    item, _ = _write_pair(tmp_path, size=(20, 30))
    data = TrainDataset([item], crop=(64, 64), scale_range=(1.0, 1.0), color_jitter=0.0)
    image, mask = data[0]
    assert image.shape == (3, 64, 64)
    assert (mask == 255).sum() == 64 * 64 - 20 * 30
    assert torch.all(image[:, mask == 255] == 0)


def test_label_ids_are_mapped_to_train_ids(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.array([[7, 26, 0, 33]] * 8, dtype=np.uint8).repeat(2, axis=1)).save(tmp_path / "l.png")
    _, mask = EvalDataset([Item(str(tmp_path / "i.png"), str(tmp_path / "l.png"), "label_ids")])[0]
    assert mask[0].tolist() == [0, 0, 13, 13, 255, 255, 18, 18]


def test_class_uniform_crops_centre_on_the_drawn_class(tmp_path):
    item, _ = _write_pair(tmp_path, size=(64, 128))
    centroids = pd.DataFrame({"train_id": [13], "item": [0], "y": [6], "x": [41]})
    data = TrainDataset([item], crop=(16, 16), scale_range=(1.0, 1.0), color_jitter=0.0, centroids=centroids,
                        class_uniform=True, epoch_length=8)
    torch.manual_seed(0)
    hits = [bool((data[i][1] == 13).any()) for i in range(1, 8, 2)]  # odd indices: centred crops
    assert all(hits)


def test_manifest_paths_must_stay_inside_the_root(tmp_path):
    manifest = pd.DataFrame({"image_path": ["../../etc/passwd"], "label_path": ["x.png"]})
    with pytest.raises(ValueError, match="outside its data root"):
        items_from_manifest(manifest, tmp_path)


def test_empty_training_set_is_a_clear_error():
    with pytest.raises(ValueError, match="training set is empty"):
        TrainDataset([], crop=(16, 16))


def test_labels_may_live_under_their_own_root(tmp_path):
    manifest = pd.DataFrame({"image_path": ["img/a.png"], "label_path": ["city/a_autoLabelTrainIds.png"]})
    item = items_from_manifest(manifest, tmp_path / "raw", "train_ids", tmp_path / "auto")[0]
    assert item.image == str((tmp_path / "raw/img/a.png").resolve())
    assert item.label == str((tmp_path / "auto/city/a_autoLabelTrainIds.png").resolve())
    escaping = pd.DataFrame({"image_path": ["img/a.png"], "label_path": ["../raw/img/a.png"]})
    with pytest.raises(ValueError, match="outside its data root"):
        items_from_manifest(escaping, tmp_path / "raw", "train_ids", tmp_path / "auto")
