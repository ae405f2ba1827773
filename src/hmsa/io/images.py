"""Photos read as 8-bit RGB, the model's input: 16-bit images converted, not clipped, and
images over a pixel limit refused from their header, before any memory is spent on them.
PNGs are written whole or not at all, so that an interrupted run never leaves half an image."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from hmsa.io.files import atomic_path

if TYPE_CHECKING:
    import torch

#: the default limit on an input image's pixels (a 50-megapixel photo, 8660 x 5773); a
#: 12000 x 12000 image would need about 6 GB at 2.0 inference scale
MAX_IMAGE_PIXELS = 50_000_000

#: 16-bit greyscale modes as Pillow opens them
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and says what to do."""


def read_rgb(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, setting: str = "the pixel limit") -> np.ndarray:
    """The image at ``path`` as uint8 RGB (H, W, 3).

    Greyscale, palette, RGBA and CMYK images are converted; 16-bit images are scaled to
    8 bits (Pillow's own conversion would clip them to white); floating-point images are
    refused. An image over ``max_pixels`` is refused naming ``setting``, the option that
    raises the limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit speaks instead
            with Image.open(path) as img:
                width, height = img.size
                if max_pixels and width * height > max_pixels:
                    raise _too_big(path, width, height, max_pixels, setting)
                return to_rgb(img, path)
    except Image.DecompressionBombError as err:  # a header that claims more than Pillow will ever decode
        raise ImageError(f"{path}: refused, {err}; an image this large is over {setting} "
                         f"({max_pixels:,} pixels): downscale it") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{path}: cannot read this image ({err}); remove it or convert it to PNG/JPEG") from None


def _too_big(path, width: int, height: int, max_pixels: int, setting: str) -> ImageError:
    return ImageError(f"{path}: {width} x {height} = {width * height:,} pixels, over {setting} ({max_pixels:,}); "
                      f"downscale the image, or raise {setting}")


def to_rgb(img: Image.Image, path: str | Path = "image") -> np.ndarray:
    """An open Pillow image as uint8 RGB (H, W, 3); see :func:`read_rgb`."""
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        values = np.asarray(img)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageError(f"{path}: a 32-bit integer image with values outside 0..65535; save it as an 8- or "
                             "16-bit PNG")
        grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        raise ImageError(f"{path}: a floating-point image (mode F) has no fixed range; save it as an 8- or 16-bit "
                         "PNG")
    return np.array(img.convert("RGB"))


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, setting: str = "the pixel limit") -> torch.Tensor:
    """The image at ``path`` as the model's input: a float tensor (3, H, W) in [0, 1] (see
    :func:`read_rgb`)."""
    import torch  # here only: the ingestion modules that read this file's limits do not need torch

    return torch.from_numpy(read_rgb(path, max_pixels, setting)).permute(2, 0, 1).float().div(255)


def write_png_atomic(array: np.ndarray, path: str | Path) -> None:
    """Write a PNG to a temporary file beside ``path``, then rename: never a half-written PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
