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

Target shapes equal nnU-Net's (`round(size * scale)` per axis). Windows come from adaptive pooling to
exactly that shape, so they tile the whole patch even where a size is not divisible by the stride
(adaptive windows overlap by at most one voxel instead of dropping the border).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from torch.nn import functional as F

HF_MODES = ("max", "area", "nearest")


def _adaptive_pool(x: torch.Tensor, out_shape: Sequence[int], mode: str) -> torch.Tensor:
    """Pools a (C, *spatial) float tensor to (C, *out_shape) with adaptive max or average windows."""
    n_spatial = x.ndim - 1
    if n_spatial == 2:
        pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    elif n_spatial == 3:
        pool = F.adaptive_max_pool3d if mode == "max" else F.adaptive_avg_pool3d
    elif n_spatial == 1:
        pool = F.adaptive_max_pool1d if mode == "max" else F.adaptive_avg_pool1d
    else:
        raise ValueError(f"HF downsampling supports 1-3 spatial dimensions, got a segmentation of shape {tuple(x.shape)}")
    return pool(x, tuple(int(i) for i in out_shape))


def hf_downsample_label_map(seg: torch.Tensor, out_shape: Sequence[int], ignore_label: Optional[int] = None
                            ) -> torch.Tensor:
    """Foreground-preserving downsampling of a (1, *spatial) integer label map to (1, *out_shape)."""
    labels, counts = torch.unique(seg, return_counts=True)
    out = torch.zeros((1, *out_shape), dtype=seg.dtype, device=seg.device)
    order = []  # written lowest priority first; later writes win
    if ignore_label is not None and bool((labels == ignore_label).any()):
        order.append(int(ignore_label))
    foreground = [(int(c), int(lab)) for lab, c in zip(labels, counts) if int(lab) != 0 and int(lab) != ignore_label]
    # most frequent first so the rarest label is written last and wins collisions
    order += [lab for _, lab in sorted(foreground, key=lambda t: (-t[0], t[1]))]
    for lab in order:
        present = _adaptive_pool((seg == lab).float(), out_shape, "max") > 0
        out[present] = lab
    return out


def area_downsample_label_map(seg: torch.Tensor, out_shape: Sequence[int], labels: Sequence[int]) -> torch.Tensor:
    """Soft one-hot targets: fraction of each label (channel order = `labels`) in every coarse window."""
    onehot = torch.stack([(seg[0] == lab).float() for lab in labels])
    return _adaptive_pool(onehot, out_shape, "avg")


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
            if not is_label_map:  # regions: independent binary channels
                pooled = _adaptive_pool(segmentation.float(), shape, "max" if self.mode == "max" else "avg")
                results.append((pooled > 0).to(segmentation.dtype) if self.mode == "max" else pooled)
            elif self.mode == "max":
                results.append(hf_downsample_label_map(segmentation, shape, self.ignore_label))
            else:
                results.append(area_downsample_label_map(segmentation, shape, self.labels))
        return results
