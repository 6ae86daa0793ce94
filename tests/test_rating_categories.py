"""Visual-rating categories: every cut-off of the 0-4 scale and the two named rating conventions."""
import numpy as np
import pytest

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.rating_categories import (CONVENTIONS, MAX_SLICE_ONE_HEMISPHERE, PROTOCOL_SLICE_BOTH,
                                                        category_from_count, rate_region, rate_subject)


@pytest.mark.parametrize("count,category", [(0, 0), (1, 1), (10, 1), (11, 2), (20, 2), (21, 3), (40, 3), (41, 4),
                                            (132, 4), (10.0, 1), (np.int64(21), 3)])
def test_category_cut_offs(count, category):
    assert category_from_count(count) == category


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "12", None, True])
def test_category_rejects_non_counts(bad):
    with pytest.raises(MfnsInputError):
        category_from_count(bad)


def _dots(mask, z, n, x0, x1, y0=2):
    """n isolated single-pixel PVS on slice z, in columns x0..x1 (2 pixels apart, so never 8-connected)."""
    placed = 0
    for y in range(y0, mask.shape[1] - 1, 2):
        for x in range(x0, x1, 2):
            if placed == n:
                return
            mask[z, y, x] = 1
            placed += 1
    assert placed == n, "phantom slice too small"


def _volume():
    shape = (6, 30, 40)
    mask = np.zeros(shape, np.uint8)
    region = np.zeros(shape, np.uint8)
    region[1:5] = 1
    hemi = np.zeros(shape, np.uint8)
    hemi[:, :, 20:] = 1  # left (high x index, LPS)
    hemi[:, :, :20] = 2  # right
    _dots(mask, 1, 12, 21, 40)  # slice 1: 12 left
    _dots(mask, 2, 9, 21, 40)   # slice 2: 9 left + 9 right = 18 both
    _dots(mask, 2, 9, 0, 19)
    _dots(mask, 3, 15, 0, 19)   # slice 3: 15 right: the most in one hemisphere
    _dots(mask, 5, 30, 0, 40)   # slice 5 is outside the region: never counted
    return mask, region, hemi


def test_protocol_slice_both_hemispheres():
    mask, region, hemi = _volume()
    r = rate_region(mask, "BG", 2, region, hemi, PROTOCOL_SLICE_BOTH)
    assert (r["slice"], r["hemisphere"], r["count"], r["category"]) == (2, "both", 18, 2)
    assert r["convention"] == PROTOCOL_SLICE_BOTH
    r = rate_region(mask, "BG", 5, region, hemi, PROTOCOL_SLICE_BOTH)  # protocol slice outside the region
    assert r["count"] == 0 and r["category"] == 0
    r = rate_region(mask, "BG", None, region, hemi, PROTOCOL_SLICE_BOTH)
    assert r["count"] is None and r["category"] is None
    with pytest.raises(MfnsInputError, match="rating slice 6"):
        rate_region(mask, "BG", 6, region, hemi)


def test_max_slice_one_hemisphere():
    mask, region, hemi = _volume()
    r = rate_region(mask, "CSO", 2, region, hemi, MAX_SLICE_ONE_HEMISPHERE)
    assert (r["slice"], r["hemisphere"], r["count"], r["category"]) == (3, "right", 15, 2)
    # without a hemisphere map the midline of the region decides the side (counts.py's rule)
    r = rate_region(mask, "CSO", 2, region, None, MAX_SLICE_ONE_HEMISPHERE)
    assert (r["slice"], r["hemisphere"], r["count"]) == (3, "right", 15)
    # a PVS crossing the midline is counted once on each side it reaches
    m2 = np.zeros_like(mask)
    m2[1, 10, 18:23] = 1
    r = rate_region(m2, "CSO", None, region, hemi, MAX_SLICE_ONE_HEMISPHERE)
    assert (r["slice"], r["hemisphere"], r["count"]) == (1, "left", 1)
    empty = rate_region(mask, "CSO", 2, np.zeros_like(region), hemi, MAX_SLICE_ONE_HEMISPHERE)
    assert empty["count"] is None


def test_rate_subject_names_every_convention():
    mask, region, hemi = _volume()
    rows = rate_subject(mask, {"BG": 1, "CSO": 2}, {"BG": region, "CSO": region}, hemi)
    assert [(r["convention"], r["region"]) for r in rows] == [(c, g) for c in CONVENTIONS for g in ("BG", "CSO")]
    assert rows[0]["count"] == 12 and rows[1]["count"] == 18
    with pytest.raises(MfnsInputError, match="convention"):
        rate_region(mask, "BG", 1, region, hemi, "most_pvs")
    with pytest.raises(MfnsInputError, match="shape"):
        rate_region(mask, "BG", 1, region[:3], hemi)
