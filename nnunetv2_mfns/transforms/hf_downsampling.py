"""HF ("Highlighting Foregrounds") downsampling of segmentations for deep supervision.

Stock nnU-Net makes the target of every deep-supervision (DS) scale by nearest-neighbour interpolation
(`DownsampleSegForDSTransform`). A perivascular space one or two voxels wide then disappears from the
1/4 and 1/8 targets, so the coarse heads are trained to predict "no PVS" where there is one. HF keeps
it: a coarse voxel is foreground if any voxel of its window is foreground.

Modes
- `max` (HF, default): per-label max pooling over the window. When several labels fall into one
  window the rarer one (fewer voxels in this sample) wins; the ignore label wins only over background,
  so known foreground is never hidden and unknown tissue is never declared background.
- `area`: soft targets, the fraction of each label in the window (one channel per label, background
  included, in label order), which nnU-Net's Dice losses accept as one-hot targets.
- `nearest`: stock nnU-Net behaviour, for ablations.

Target shapes equal nnU-Net's (`round(size * scale)` per axis). Windows never overlap and cover the whole
patch: window t of an axis is voxels [t*k, (t+1)*k) with k = 1/scale (the cumulative stride), the border is
padded with background where the size is not divisible by k, and where `round` drops the last, partial window
(e.g. 13 voxels, k = 4 -> 3 targets) that partial window is merged into the one before it rather than lost.
(Adaptive pooling, used before, overlaps neighbouring windows by a voxel on such shapes: one PVS voxel on the
overlap was then counted in two coarse voxels, inflating the foreground.)
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from torch.nn import functional as F

HF_MODES = ("max", "area", "nearest")


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def window_sizes(scale: Union[float, Sequence[float]], n_axes: int) -> List[int]:
    """Window per axis for a deep-supervision scale: 1/scale, the cumulative stride (nnU-Net's scales are
    1/cumprod(strides), so this is an integer)."""
    scale = list(scale) if isinstance(scale, (tuple, list)) else [scale] * n_axes
    windows = [int(round(1 / s)) for s in scale]
    if any(k < 1 or abs(k * s - 1) > 1e-6 for k, s in zip(windows, scale)):
        raise ValueError(f"HF downsampling needs scales of the form 1/integer (nnU-Net's 1/cumprod(strides)), got {scale}")
    return windows


def _merge_last(x: torch.Tensor, axis: int, target: int, reduce: str) -> torch.Tensor:
    """Merge the surplus trailing window along `axis` into the one before it (max or sum)."""
    if x.shape[axis] == target:
        return x
    head = x.narrow(axis, 0, target - 1)
    tail = x.narrow(axis, target - 1, x.shape[axis] - target + 1)
    tail = tail.amax(dim=axis, keepdim=True) if reduce == "max" else tail.sum(dim=axis, keepdim=True)
    return torch.cat((head, tail), axis)


def _window_pool(x: torch.Tensor, out_shape: Sequence[int], windows: Sequence[int], mode: str) -> torch.Tensor:
    """Pools a (C, *spatial) float tensor to (C, *out_shape) over non-overlapping windows of `windows` voxels
    (module docstring): `max` = any foreground in the window, `avg` = fraction of the window's real voxels."""
    n_spatial = x.ndim - 1
    if n_spatial not in _MAX_POOL:
        raise ValueError(f"HF downsampling supports 1-3 spatial dimensions, got a segmentation of shape {tuple(x.shape)}")
    out_shape = [int(i) for i in out_shape]
    windows = [int(k) for k in windows]
    for n, m, k in zip(x.shape[1:], out_shape, windows):
        if not (math.ceil(n / k) - 1 <= m <= math.ceil(n / k)):
            raise ValueError(f"HF downsampling: {n} voxels in windows of {k} cannot give {m} target voxels")
    pad = []
    for n, k in zip(reversed(x.shape[1:]), reversed(windows)):  # F.pad lists the last axis first
        pad += [0, math.ceil(n / k) * k - n]
    if mode == "max":
        pooled = _MAX_POOL[n_spatial](F.pad(x, pad), windows, windows)
        for axis, m in enumerate(out_shape, start=1):
            pooled = _merge_last(pooled, axis, m, "max")
        return pooled
    volume = float(math.prod(windows))
    sums = _AVG_POOL[n_spatial](F.pad(x, pad), windows, windows) * volume
    counts = _AVG_POOL[n_spatial](F.pad(torch.ones_like(x[:1]), pad), windows, windows) * volume
    for axis, m in enumerate(out_shape, start=1):
        sums = _merge_last(sums, axis, m, "sum")
        counts = _merge_last(counts, axis, m, "sum")
    return sums / counts


def hf_downsample_label_map(seg: torch.Tensor, out_shape: Sequence[int], windows: Sequence[int],
                            ignore_label: Optional[int] = None) -> torch.Tensor:
    """Foreground-preserving downsampling of a (1, *spatial) integer label map to (1, *out_shape) over
    non-overlapping windows of `windows` voxels per axis (``window_sizes``)."""
    labels, counts = torch.unique(seg, return_counts=True)
    out = torch.zeros((1, *out_shape), dtype=seg.dtype, device=seg.device)
    order = []  # written lowest priority first; later writes win
    if ignore_label is not None and bool((labels == ignore_label).any()):
        order.append(int(ignore_label))
    foreground = [(int(c), int(lab)) for lab, c in zip(labels, counts) if int(lab) != 0 and int(lab) != ignore_label]
    # most frequent first so the rarest label is written last and wins collisions
    order += [lab for _, lab in sorted(foreground, key=lambda t: (-t[0], t[1]))]
    for lab in order:
        present = _window_pool((seg == lab).float(), out_shape, windows, "max") > 0
        out[present] = lab
    return out


def area_downsample_label_map(seg: torch.Tensor, out_shape: Sequence[int], windows: Sequence[int],
                              labels: Sequence[int]) -> torch.Tensor:
    """Soft one-hot targets: fraction of each label (channel order = `labels`) in every coarse window."""
    onehot = torch.stack([(seg[0] == lab).float() for lab in labels])
    return _window_pool(onehot, out_shape, windows, "avg")


class DownsampleSegForDSTransformHF(SegOnlyTransform):
    """Drop-in replacement for batchgeneratorsv2's DownsampleSegForDSTransform with HF modes.

    `labels` (all label values, background included, in network output order) is needed for `area`.
    Region-based segmentations (several binary channels) are pooled channel by channel.
    """

    def __init__(self, ds_scales: Union[List, Tuple], mode: str = "max", labels: Optional[Sequence[int]] = None,
                 ignore_label: Optional[int] = None):
        super().__init__()
        if mode not in HF_MODES:
            raise ValueError(f"HF mode must be one of {HF_MODES}, got {mode!r}")
        if mode == "area":
            if labels is None:
                raise ValueError("HF mode 'area' needs the list of labels (one soft target channel per label)")
            if ignore_label is not None:
                raise ValueError("HF mode 'area' cannot represent an ignore label in soft targets; use mode 'max'")
        self.ds_scales = ds_scales
        self.mode = mode
        self.labels = None if labels is None else [int(i) for i in labels]
        self.ignore_label = ignore_label
        self._stock = DownsampleSegForDSTransform(ds_scales=ds_scales) if mode == "nearest" else None

    def _target_shape(self, spatial_shape: Sequence[int], scale) -> List[int]:
        if not isinstance(scale, (tuple, list)):
            scale = [scale] * len(spatial_shape)
        if len(scale) != len(spatial_shape):
            raise ValueError(f"DS scale {scale} does not match segmentation with {len(spatial_shape)} spatial axes")
        # same rounding as nnU-Net's DownsampleSegForDSTransform, so shapes match the network outputs it expects
        return [round(i * j) for i, j in zip(spatial_shape, scale)]

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> List[torch.Tensor]:
        if self._stock is not None:
            return self._stock._apply_to_segmentation(segmentation, **params)
        results = []
        is_label_map = segmentation.shape[0] == 1
        for s in self.ds_scales:
            shape = self._target_shape(segmentation.shape[1:], s)
            if list(shape) == list(segmentation.shape[1:]):
                # full resolution stays a label map in every mode: nnU-Net's validation step one-hot encodes it
                results.append(segmentation)
                continue
            windows = window_sizes(s, len(shape))
            if not is_label_map:  # regions: independent binary channels
                pooled = _window_pool(segmentation.float(), shape, windows, "max" if self.mode == "max" else "avg")
                results.append((pooled > 0).to(segmentation.dtype) if self.mode == "max" else pooled)
            elif self.mode == "max":
                results.append(hf_downsample_label_map(segmentation, shape, windows, self.ignore_label))
            else:
                results.append(area_downsample_label_map(segmentation, shape, windows, self.labels))
        return results
