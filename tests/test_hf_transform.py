"""HF deep-supervision targets: tiny PVS survive, shapes equal nnU-Net's, collisions and ignore label."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunetv2_mfns.transforms.hf_downsampling import DownsampleSegForDSTransformHF

SCALES_2D = [[1, 1], [0.5, 0.5], [0.25, 0.25], [0.125, 0.125]]
SCALES_3D = [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.125, 0.125]]


def _seg(shape, voxels, value=1, dtype=torch.int16):
    seg = torch.zeros((1, *shape), dtype=dtype)
    for v in voxels:
        seg[(0, *v)] = value
    return seg


@pytest.mark.parametrize("shape,scales", [((64, 48), SCALES_2D), ((37, 53), SCALES_2D), ((20, 64, 52), SCALES_3D)])
def test_shapes_equal_stock(shape, scales):
    seg = _seg(shape, [])
    stock = DownsampleSegForDSTransform(scales)(segmentation=seg)["segmentation"]
    for mode in ("max", "area", "nearest"):
        ours = DownsampleSegForDSTransformHF(scales, mode=mode, labels=[0, 1])(segmentation=seg)["segmentation"]
        assert len(ours) == len(stock)
        for o, s in zip(ours, stock):
            assert tuple(o.shape[1:]) == tuple(s.shape[1:])


@pytest.mark.parametrize("position", [(0, 0), (13, 29), (63, 47), (33, 6)])
def test_one_voxel_pvs_survives_max_and_vanishes_nearest(position):
    seg = _seg((64, 48), [position])
    hf = DownsampleSegForDSTransformHF(SCALES_2D, mode="max")(segmentation=seg)["segmentation"]
    near = DownsampleSegForDSTransformHF(SCALES_2D, mode="nearest")(segmentation=seg)["segmentation"]
    for i, (h, n) in enumerate(zip(hf, near)):
        assert int(h.sum()) == 1, f"scale {i}: HF must keep exactly one coarse PVS voxel"
        # the coarse voxel is the window that contains the fine voxel
        idx = np.argwhere(h[0].numpy())[0]
        factor = 2 ** i
        assert tuple(idx) == (position[0] // factor, position[1] // factor)
        if i >= 2:
            assert int(n.sum()) == 0, f"scale {i}: nearest-neighbour downsampling should lose a 1-voxel PVS"


def test_one_voxel_pvs_vanishes_in_stock_too():
    # the reason for HF: nnU-Net's own transform drops it at 1/4 and 1/8
    seg = _seg((64, 48), [(13, 29)])
    stock = DownsampleSegForDSTransform(SCALES_2D)(segmentation=seg)["segmentation"]
    assert int(stock[2].sum()) == 0 and int(stock[3].sum()) == 0


def test_area_fractions():
    seg = _seg((8, 8), [(0, 0), (0, 1), (1, 0)])  # 3 of the 4 voxels in the first 2x2 window
    out = DownsampleSegForDSTransformHF([[1, 1], [0.5, 0.5], [0.25, 0.25]], mode="area",
                                        labels=[0, 1])(segmentation=seg)["segmentation"]
    assert out[0].shape == (1, 8, 8) and out[0].dtype == seg.dtype  # full res stays a label map
    half, quarter = out[1], out[2]
    assert half.shape == (2, 4, 4) and half.dtype == torch.float32
    assert half[1, 0, 0].item() == pytest.approx(0.75)
    assert half[0, 0, 0].item() == pytest.approx(0.25)
    assert quarter[1, 0, 0].item() == pytest.approx(3 / 16)
    torch.testing.assert_close(half.sum(0), torch.ones(4, 4))


def test_multiclass_collision_rarer_class_wins():
    seg = torch.zeros((1, 8, 8), dtype=torch.int16)
    seg[0, :4, :4] = 1          # common class, 16 voxels
    seg[0, 1, 1] = 2            # rare class, 1 voxel, inside the same 4x4 window
    out = DownsampleSegForDSTransformHF([[1, 1], [0.25, 0.25]], mode="max")(segmentation=seg)["segmentation"][1]
    assert out[0, 0, 0].item() == 2
    assert out[0, 1, 1].item() == 0
    # swap rarity: now class 1 is the rare one
    seg2 = torch.full((1, 8, 8), 2, dtype=torch.int16)
    seg2[0, 5, 5] = 1
    out2 = DownsampleSegForDSTransformHF([[1, 1], [0.25, 0.25]], mode="max")(segmentation=seg2)["segmentation"][1]
    assert out2[0, 1, 1].item() == 1 and out2[0, 0, 0].item() == 2


def test_ignore_label_loses_to_foreground_beats_background():
    seg = torch.zeros((1, 8, 8), dtype=torch.int16)
    seg[0, :4, :4] = 3          # ignore everywhere in window (0, 0) ...
    seg[0, 2, 2] = 1            # ... except one PVS voxel
    seg[0, 4:, 4:] = 3          # ignore only in window (1, 1)
    out = DownsampleSegForDSTransformHF([[1, 1], [0.25, 0.25]], mode="max",
                                        ignore_label=3)(segmentation=seg)["segmentation"][1]
    assert out[0].tolist() == [[1, 0], [0, 3]]


def test_area_refuses_ignore_label_and_needs_labels():
    with pytest.raises(ValueError, match="ignore label"):
        DownsampleSegForDSTransformHF(SCALES_2D, mode="area", labels=[0, 1], ignore_label=2)
    with pytest.raises(ValueError, match="labels"):
        DownsampleSegForDSTransformHF(SCALES_2D, mode="area")
    with pytest.raises(ValueError, match="mode"):
        DownsampleSegForDSTransformHF(SCALES_2D, mode="bilinear")


def test_regions_pooled_per_channel():
    seg = torch.zeros((2, 16, 16), dtype=torch.int16)
    seg[0, 3, 3] = 1
    seg[1, 12, 9] = 1
    out = DownsampleSegForDSTransformHF([[1, 1], [0.125, 0.125]], mode="max")(segmentation=seg)["segmentation"][1]
    assert out.shape == (2, 2, 2)
    assert out[0].tolist() == [[1, 0], [0, 0]] and out[1].tolist() == [[0, 0], [0, 1]]


def test_3d_anisotropic_pvs_survives():
    seg = _seg((20, 64, 52), [(7, 41, 50)])
    hf = DownsampleSegForDSTransformHF(SCALES_3D, mode="max")(segmentation=seg)["segmentation"]
    assert all(int(h.sum()) == 1 for h in hf)


def _hand_windows(n: int, k: int, m: int) -> list:
    """Window t = voxels [t*k, (t+1)*k), the last one running to the end of the axis (issue 22: no overlap,
    nothing dropped when round() leaves out a partial window)."""
    return [(t * k, n if t == m - 1 else min((t + 1) * k, n)) for t in range(m)]


@pytest.mark.parametrize("shape,scales", [((37, 53), SCALES_2D), ((13, 29), SCALES_2D), ((9, 23, 19), SCALES_3D)])
@pytest.mark.parametrize("mode", ["max", "area"])
def test_odd_shapes_use_non_overlapping_windows_on_a_real_label(shape, scales, mode):
    g = np.random.default_rng(4)
    fg = g.random(shape) < 0.04  # scattered one-voxel PVS, many on window borders
    seg = torch.from_numpy(fg.astype(np.int16))[None]
    outs = DownsampleSegForDSTransformHF(scales, mode=mode, labels=[0, 1])(segmentation=seg)["segmentation"]
    for scale, out in zip(scales[1:], outs[1:]):
        k = [int(round(1 / s)) for s in scale]
        m = [round(n * s) for n, s in zip(shape, scale)]
        axes = [_hand_windows(n, kk, mm) for n, kk, mm in zip(shape, k, m)]
        expected_any = np.zeros(m, dtype=bool)
        expected_frac = np.zeros(m)
        for idx in np.ndindex(*m):
            window = tuple(slice(*axes[a][i]) for a, i in enumerate(idx))
            expected_any[idx] = fg[window].any()
            expected_frac[idx] = fg[window].mean()
        if mode == "max":
            np.testing.assert_array_equal(out[0].numpy().astype(bool), expected_any)
        else:
            np.testing.assert_allclose(out[1].numpy(), expected_frac, rtol=0, atol=1e-6)
            np.testing.assert_allclose(out.sum(0).numpy(), 1.0, atol=1e-6)


def test_odd_shape_voxel_on_a_window_border_is_counted_once():
    # 37 voxels at scale 1/8 -> 5 targets; adaptive pooling's windows overlap, so a voxel at 29 fell in two
    seg = _seg((37, 16), [(29, 3)])
    out = DownsampleSegForDSTransformHF([[1, 1], [0.125, 0.125]], mode="max")(segmentation=seg)["segmentation"][1]
    assert out.shape == (1, 5, 2) and int(out.sum()) == 1 and int(out[0, 3, 0]) == 1
