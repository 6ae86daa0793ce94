"""User control over false positives: `--threshold` (PVS probability) and `--min-size` (voxels or mm^3).

Defaults reproduce nnU-Net's own mask: no threshold given -> nnU-Net's segmentation (argmax of the
softmax, i.e. PVS where its probability exceeds background's), no minimum size. With `--threshold t` the
mask is `P(PVS) >= t` from the probabilities nnU-Net exports; `--min-size` then removes 3D components
(26-connected, as the census counts them) smaller than the given size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunetv2_mfns.errors import MfnsInputError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mm3|mm\^3|vox|voxels)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class MinSize:
    value: float
    unit: str  # "voxels" or "mm3"

    def voxels(self, spacing: tuple[float, float, float]) -> float:
        return self.value if self.unit == "voxels" else self.value / float(np.prod(spacing))

    def __str__(self) -> str:
        return f"{self.value:g} {'voxels' if self.unit == 'voxels' else 'mm^3'}"


def parse_threshold(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise MfnsInputError(f"--threshold {value}: expected a probability in (0, 1)") from None
    if not 0.0 < t < 1.0:
        raise MfnsInputError(f"--threshold {value}: expected a probability in (0, 1)")
    return t


def parse_min_size(value: str | None) -> MinSize | None:
    """`5` or `5vox` (voxels), `3.5mm3` (mm^3); 0 means no minimum."""
    if value is None:
        return None
    m = _SIZE.match(str(value))
    if not m:
        raise MfnsInputError(f"--min-size {value}: expected a number of voxels (e.g. 3) or a volume (e.g. 2.5mm3)")
    unit = "mm3" if (m.group(2) or "").lower().startswith("mm") else "voxels"
    size = MinSize(float(m.group(1)), unit)
    return None if size.value == 0 else size


def apply(seg: np.ndarray, probabilities: np.ndarray | None, threshold: float | None, min_size: MinSize | None,
          spacing: tuple[float, float, float]) -> tuple[np.ndarray, int]:
    """Final uint8 mask (z, y, x) and the number of components removed by the minimum size."""
    mask = (probabilities >= threshold) if threshold is not None else (seg > 0)
    removed = 0
    if min_size is not None:
        lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        if n:
            sizes = np.bincount(lab.ravel())
            small = sizes < min_size.voxels(spacing)
            small[0] = False
            removed = int(small.sum())
            mask = mask & ~small[lab]
    return mask.astype(np.uint8), removed
