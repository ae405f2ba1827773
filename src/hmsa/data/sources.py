"""Where the raw Cityscapes-layout tree comes from: SynthCity generated, Mapillary Vistas
converted, or a real Cityscapes tree checked before anything reads it."""

from __future__ import annotations

from pathlib import Path

from hmsa.data import cityscapes, mapillary, synthetic
from hmsa.data.config import DataConfig
from hmsa.data.ingest import DataValidationError


def prepare(cfg: DataConfig, root: Path, workers: int = 1) -> bool:
    """Make ``root`` hold the tree ``data.source`` names; True when it was (re)built now.

    A Cityscapes root is only checked: it must exist and hold leftImg8bit/, and the error says
    which setting to change."""
    if cfg.source == "synthetic":
        return synthetic.ensure_generated(root, cfg.synthetic, workers)
    if cfg.source == "mapillary":
        try:
            return mapillary.ensure_converted(Path(cfg.mapillary_root), root, cfg.mapillary, workers)
        except mapillary.MapillaryError as err:
            raise DataValidationError(str(err)) from None
    if not root.is_dir():
        raise DataValidationError(
            f"data.cityscapes_root: {root} does not exist. Set it to the folder that holds "
            "leftImg8bit/, gtFine/ and gtCoarse/ (e.g. --params data.cityscapes_root=/path/to/cityscapes, "
            "or with --env cityscapes: export CITYSCAPES_DATASET=/path/to/cityscapes)."
        )
    if not (root / cityscapes.IMAGE_DIR).is_dir():
        raise DataValidationError(
            f"data.cityscapes_root: {root} has no {cityscapes.IMAGE_DIR}/ folder, so it is not a "
            "Cityscapes-layout tree. Point it (or CITYSCAPES_DATASET, with --env cityscapes) at the folder "
            "that holds leftImg8bit/ and gtFine/."
        )
    return False
