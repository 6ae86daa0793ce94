"""Visual-rating categories: PVS counts on rating slices mapped to the 0-4 scale clinicians use.

Scale (Potter et al. 2015, Cerebrovasc Dis 39:224-231; the same cut-offs for BG and CSO):
    0 = no PVS, 1 = 1-10, 2 = 11-20, 3 = 21-40, 4 = more than 40.
Rating guides differ in which slice and which side is counted, so both are named conventions:
    * `protocol_slice_both_hemispheres` (default, the paper's): the protocol slice (BG: the anterior-commissure
      slice; CSO: 1 cm above the top of the lateral ventricles), both hemispheres together;
    * `max_slice_one_hemisphere` (Potter's guide): of every slice that crosses the region, the one with the
      most PVS in one hemisphere, counting that hemisphere only (the side with more PVS; ties: the lower
      slice index, then left).
A count is always `counts.count_slice`: 2D 8-connected components of the mask inside the region on that
slice (inside region AND hemisphere for one side), the definition the rating-slice counts use everywhere.
"""
from __future__ import annotations

import math

import numpy as np

from nnunetv2_mfns.errors import MfnsInputError

from .counts import count_slice

PROTOCOL_SLICE_BOTH = "protocol_slice_both_hemispheres"
MAX_SLICE_ONE_HEMISPHERE = "max_slice_one_hemisphere"
CONVENTIONS = {
    PROTOCOL_SLICE_BOTH: "protocol slice (BG: anterior commissure; CSO: 1 cm above the lateral ventricles), "
                         "both hemispheres (Cai et al. 2024)",
    MAX_SLICE_ONE_HEMISPHERE: "slice with the most PVS, one hemisphere (the side with more; Potter et al. 2015)",
}
DEFAULT_CONVENTION = PROTOCOL_SLICE_BOTH
# upper bound (inclusive) of categories 0..3; above the last one is category 4
CATEGORY_UPPER_BOUNDS = (0, 10, 20, 40)
CATEGORY_LABELS = {0: "none", 1: "1-10", 2: "11-20", 3: "21-40", 4: ">40"}


def category_from_count(count: int | float) -> int:
    """Maps a PVS count to the 0-4 rating category."""
    if isinstance(count, bool) or not isinstance(count, (int, float, np.integer, np.floating)):
        raise MfnsInputError(f"PVS count must be a number, got {count!r}")
    if not math.isfinite(float(count)) or count < 0:
        raise MfnsInputError(f"PVS count must be a finite non-negative number, got {count!r}")
    for cat, upper in enumerate(CATEGORY_UPPER_BOUNDS):
        if count <= upper:
            return cat
    return 4


def _hemisphere_counts(mask2d: np.ndarray, region2d: np.ndarray | None, hemi2d: np.ndarray | None,
                       high_index_is_left: bool) -> dict[str, int]:
    if hemi2d is None:  # no hemisphere map: counts.py's midline rule
        c = count_slice(mask2d, region2d, high_index_is_left=high_index_is_left)
        return {"left": c["left"], "right": c["right"]}
    base = np.ones(mask2d.shape, bool) if region2d is None else np.asarray(region2d) > 0
    return {side: count_slice(mask2d, base & (hemi2d == code))["total"] for side, code in (("left", 1), ("right", 2))}


def rate_region(mask: np.ndarray, region_name: str, protocol_slice: int | None, region: np.ndarray | None,
                hemisphere: np.ndarray | None = None, convention: str = DEFAULT_CONVENTION,
                high_index_is_left: bool = True) -> dict:
    """Count and category of one region under one convention.

    mask, region, hemisphere: 3D arrays (z, y, x); hemisphere 0 outside, 1 left, 2 right.
    Returns {"region", "convention", "slice", "hemisphere" ("both", "left" or "right"), "count", "category"};
    count and category are None when the convention cannot be applied (no protocol slice, empty region).
    """
    if convention not in CONVENTIONS:
        raise MfnsInputError(f"rating convention {convention!r}: expected one of {', '.join(CONVENTIONS)}")
    mask = np.asarray(mask)
    for name, arr in (("region " + region_name, region), ("hemisphere map", hemisphere)):
        if arr is not None and np.shape(arr) != mask.shape:
            raise MfnsInputError(f"{name} shape {np.shape(arr)} != mask shape {mask.shape}")
    out = {"region": region_name, "convention": convention, "slice": None, "hemisphere": None, "count": None,
           "category": None}
    if convention == PROTOCOL_SLICE_BOTH:
        if protocol_slice is None:
            return out
        if not 0 <= int(protocol_slice) < mask.shape[0]:
            raise MfnsInputError(f"{region_name} rating slice {protocol_slice} is not in 0..{mask.shape[0] - 1}")
        z = int(protocol_slice)
        c = count_slice(mask[z], None if region is None else region[z], high_index_is_left=high_index_is_left)
        out.update(slice=z, hemisphere="both", count=c["total"], category=category_from_count(c["total"]))
        return out
    zs = range(mask.shape[0]) if region is None else np.nonzero(np.asarray(region).reshape(mask.shape[0], -1).any(1))[0]
    best = None
    for z in zs:
        hc = _hemisphere_counts(mask[z], None if region is None else region[z],
                                None if hemisphere is None else np.asarray(hemisphere)[z], high_index_is_left)
        for side in ("left", "right"):
            if best is None or hc[side] > best[2]:  # strict: ties keep the lower slice, then left
                best = (int(z), side, hc[side])
    if best is not None:
        out.update(slice=best[0], hemisphere=best[1], count=best[2], category=category_from_count(best[2]))
    return out


def rate_subject(mask: np.ndarray, slices: dict[str, int | None], regions: dict[str, np.ndarray | None],
                 hemisphere: np.ndarray | None = None, conventions: tuple[str, ...] = tuple(CONVENTIONS),
                 high_index_is_left: bool = True) -> list[dict]:
    """BG and CSO rated under each convention: one dict per (convention, region), in that order."""
    rows = []
    for conv in conventions:
        for name in ("BG", "CSO"):
            rows.append(rate_region(mask, name, slices.get(name), regions.get(name), hemisphere, conv,
                                    high_index_is_left))
    return rows
