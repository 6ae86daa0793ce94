"""Per-PVS census on hand-built volumes whose components have known length, width, orientation and region."""
import math

import numpy as np
import pytest

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.census import CENSUS_COLUMNS, pvs_census

SPACING = (0.5, 0.5, 2.0)  # ITK order x, y, z: the paper's anisotropic 2 mm slices
SHAPE = (12, 40, 40)  # z, y, x


def _scene():
    mask = np.zeros(SHAPE, np.uint8)
    image = np.full(SHAPE, 100.0, np.float32)
    bg = np.zeros(SHAPE, np.uint8)
    cso = np.zeros(SHAPE, np.uint8)
    wm = np.zeros(SHAPE, np.uint8)
    bg[0:7, 0:12, 0:12] = 1
    cso[7:10, 10:30, 5:35] = 1
    wm[7:12] = 1  # white matter slab; CSO inside it wins
    hemi = np.zeros(SHAPE, np.uint8)
    hemi[:, :, 20:] = 1  # high x index = patient's left with an identity direction (LPS)
    hemi[:, :, :20] = 2
    # A: through-plane tube, 5 slices at one in-plane voxel, in BG, right hemisphere
    mask[2:7, 5, 5] = 1
    # B: in-plane tube along x, 20 voxels long, 2 voxels wide in y, one slice; in CSO, mostly left
    mask[8, 20:22, 12:32] = 1
    # C: in-plane diagonal (x = y direction), 10 voxels, one slice, white matter outside CSO, right
    for i in range(10):
        mask[10, 30 + i, 5 + i] = 1
    # D: a single voxel outside every region, outside the hemisphere map
    mask[0, 38, 38] = 1
    hemi[0, 38, 38] = 0
    image[mask > 0] = 150.0
    return mask, image, {"BG": bg, "CSO": cso, "WM": wm}, hemi


def _row(table, n_voxels):
    sel = table[table["n_voxels"] == n_voxels]
    assert len(sel) == 1
    return sel.iloc[0]


def test_census_known_components():
    mask, image, regions, hemi = _scene()
    res = pvs_census(mask, SPACING, image=image, regions=regions, hemisphere=hemi)
    t = res.table
    assert list(t.columns) == CENSUS_COLUMNS
    assert len(t) == 4 and sorted(t["id"]) == [1, 2, 3, 4]
    # labels image carries the census ids
    for _, r in t.iterrows():
        assert np.count_nonzero(res.labels == r["id"]) == r["n_voxels"]

    a = _row(t, 5)
    assert a["region"] == "BG" and a["hemisphere"] == "right"
    assert a["volume_mm3"] == pytest.approx(5 * 0.5 * 0.5 * 2.0)
    assert a["length_mm"] == pytest.approx(10.0) and a["width_mm"] == pytest.approx(0.5)
    assert a["angle_to_slice_axis_deg"] == pytest.approx(0.0, abs=1e-6)
    assert (a["orient_x"], a["orient_y"], a["orient_z"]) == pytest.approx((0, 0, 1), abs=1e-9)
    assert a["rel_t2_wm"] == pytest.approx(1.5)

    b = _row(t, 40)
    assert b["region"] == "CSO" and b["hemisphere"] == "left"
    assert b["length_mm"] == pytest.approx(10.0)
    # across the tube: 1 mm in-plane, but the 2 mm slice is the larger extent (not resolvable in 2D MRI)
    assert b["width_mm"] == pytest.approx(2.0) and b["min_width_mm"] == pytest.approx(1.0)
    assert b["angle_to_slice_axis_deg"] == pytest.approx(90.0)
    assert (b["orient_x"], b["orient_y"], b["orient_z"]) == pytest.approx((1, 0, 0), abs=1e-9)

    c = _row(t, 10)
    assert c["region"] == "other_WM"
    # 9 diagonal steps of 0.5*sqrt(2) between centres + one voxel's extent along the diagonal (sqrt(2)*0.5)
    assert c["length_mm"] == pytest.approx(10 * 0.5 * math.sqrt(2))
    assert c["angle_to_slice_axis_deg"] == pytest.approx(90.0)
    assert abs(c["orient_x"]) == pytest.approx(math.sqrt(0.5)) and abs(c["orient_y"]) == pytest.approx(math.sqrt(0.5))

    d = _row(t, 1)
    assert d["region"] == "elsewhere" and d["hemisphere"] == "outside"
    assert d["length_mm"] == pytest.approx(2.0) and d["width_mm"] == pytest.approx(0.5)
    assert math.isnan(d["angle_to_slice_axis_deg"]) and math.isnan(d["orient_z"])

    s = res.stats
    assert s["n_pvs"] == 4 and s["n_BG"] == 1 and s["n_CSO"] == 1 and s["n_other_WM"] == 1 and s["n_elsewhere"] == 1
    assert s["n_left"] == 1 and s["n_right"] == 2 and s["n_outside"] == 1
    assert s["total_volume_mm3"] == pytest.approx(56 * 0.5)
    assert s["volume_mm3_CSO"] == pytest.approx(40 * 0.5)
    assert s["wm_reference_signal"] == pytest.approx(100.0)


def test_census_physical_direction_and_connectivity():
    mask, image, regions, hemi = _scene()
    # x axis flipped (a RAS-stored image seen in LPS): the in-plane tube still gets the same oriented axis
    flipped = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    t = pvs_census(mask, SPACING, direction=flipped).table
    b = _row(t, 40)
    assert (b["orient_x"], b["orient_y"], b["orient_z"]) == pytest.approx((1, 0, 0), abs=1e-9)
    assert set(t["region"]) == {"elsewhere"} and set(t["hemisphere"]) == {"unknown"}
    assert t["rel_t2_wm"].isna().all()
    # face connectivity breaks the diagonal tube into its 10 voxels
    t6 = pvs_census(mask, SPACING, connectivity=6).table
    assert len(t6) == 3 + 10


def test_census_oblique_tube_angle():
    mask = np.zeros((10, 10, 10), np.uint8)
    for k in range(8):  # one voxel step in x per slice: isotropic 1 mm -> 45 degrees to the slice axis
        mask[k + 1, 5, 1 + k] = 1
    r = pvs_census(mask, (1.0, 1.0, 1.0)).table.iloc[0]
    assert r["angle_to_slice_axis_deg"] == pytest.approx(45.0)
    assert r["orient_z"] > 0 and r["orient_x"] > 0


def test_census_empty_and_bad_input():
    res = pvs_census(np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0))
    assert res.table.empty and res.stats["n_pvs"] == 0 and math.isnan(res.stats["median_length_mm"])
    with pytest.raises(MfnsInputError, match="hemisphere map shape"):
        pvs_census(np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0), hemisphere=np.zeros((4, 5, 5)))
    with pytest.raises(MfnsInputError, match="3D"):
        pvs_census(np.zeros((5, 6), np.uint8), (1.0, 1.0))
    with pytest.raises(MfnsInputError, match="spacing"):
        pvs_census(np.zeros((4, 5, 6), np.uint8), (1.0, 0.0, 1.0))
