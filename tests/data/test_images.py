"""Photos read as 8-bit RGB: 16-bit scaled (not clipped), huge or float images refused by name."""

import errno
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmsa.io.images import ImageError, read_rgb, write_png_atomic
from hmsa.io.files import DiskFullError


def png_header_only(path, width: int, height: int) -> None:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_a_16_bit_greyscale_image_is_scaled_not_clipped(tmp_path):
    values = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    # Pillow's own convert("RGB") clips everything above 255 to white (mean ~254)
    expected = np.round(values / 257).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_a_float_image_is_refused_by_name(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ImageError, match=r"f\.tiff: a floating-point image"):
        read_rgb(tmp_path / "f.tiff")


def test_an_image_over_the_limit_is_refused_before_it_is_decoded(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png: 50 x 40 = 2,000 pixels, over --max-pixels \(1,000\)"):
        read_rgb(tmp_path / "big.png", max_pixels=1000, setting="--max-pixels")
    png_header_only(tmp_path / "bomb.png", 14000, 14000)
    assert (tmp_path / "bomb.png").stat().st_size < 100
    # Pillow refuses it from the header: still an ImageError naming the file and the setting
    with pytest.raises(ImageError, match=r"bomb\.png: refused, Image size \(196000000 pixels\).* over --max-pixels"):
        read_rgb(tmp_path / "bomb.png", setting="--max-pixels")


def test_a_full_disk_leaves_the_previous_png_and_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    write_png_atomic(np.full((4, 4), 3, dtype=np.uint8), target)
    real_save = Image.Image.save

    def broken_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(DiskFullError, match=r"no space left on the device while writing .*x\.png"):
        write_png_atomic(np.zeros((4, 4), dtype=np.uint8), target)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    assert (np.asarray(Image.open(target)) == 3).all()
