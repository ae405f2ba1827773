"""Kept for models logged by earlier versions of hmsa: their stored code file runs
``from hmsa.serving import SegmenterPyfunc``. The served model lives in ``hmsa.mlops.serving``."""

from hmsa.mlops.serving import SegmenterPyfunc  # noqa: F401
