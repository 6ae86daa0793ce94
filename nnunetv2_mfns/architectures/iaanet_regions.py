"""IAANet's region step, dense: kept RPN cells -> grown boxes -> a capped set of pixel indices per image.

The official code (kwwcv/iaanet) filters proposals by confidence, falls back to the top 5, adds random
negative boxes in training, rounds the boxes and takes every pixel inside any box as a token. With
cell-aligned boxes of one size (see iaanet.py) the same selection is a max-pooling of the cells' scores:
a pixel's priority is the best score of any kept box that covers it, and the token budget keeps the
highest-priority pixels. Everything here runs without gradients (boxes are detached in the original too).
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def select_cells(scores: torch.Tensor, conf_threshold: float, fallback_top_k: int, min_boxes: int) -> torch.Tensor:
    """Boolean keep-mask over the flattened cells of one image.

    scores: (n_cells,) foreground probability per cell. Cells above `conf_threshold` are kept; if none is,
    the `fallback_top_k` best (the original's fallback, also at inference); then, if fewer than `min_boxes`
    are kept, random other cells are added (the original's random negative boxes in training; torch's
    global generator, so seeded runs repeat)."""
    keep = scores > conf_threshold
    if not bool(keep.any()):
        keep[torch.topk(scores, min(fallback_top_k, scores.numel())).indices] = True
    missing = min(min_boxes, scores.numel()) - int(keep.sum())
    if missing > 0:
        candidates = torch.nonzero(~keep).flatten()
        chosen = candidates[torch.randperm(len(candidates))[:missing].to(candidates.device)]
        keep[chosen] = True
    return keep


@torch.no_grad()
def select_token_pixels(fg_scores: torch.Tensor, image_shape: Sequence[int], cell: Sequence[int], growth_px: int,
                        conf_threshold: float, fallback_top_k: int, min_boxes: int,
                        max_tokens: int) -> List[torch.Tensor]:
    """Flattened pixel indices (ascending) of the tokens of each image.

    fg_scores: (B, h, w) cell scores at the RPN stride `cell` (pixels per cell along y, x); image_shape
    (H, W) with h * cell_y >= H (strided convs round up). A kept cell's box is the cell grown by `growth_px`
    on every side, clipped to the image. At most `max_tokens` pixels are kept per image, those covered by
    the best-scoring boxes first (stable sort: ties keep raster order, so the selection is deterministic)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    out = []
    for scores in fg_scores:
        keep = select_cells(scores.flatten(), conf_threshold, fallback_top_k, min_boxes).view_as(scores)
        # priority in [0, 1] for kept cells, -1 elsewhere; max pooling pads with -inf, so edges stay -1 or less
        priority = torch.where(keep, scores, torch.full_like(scores, -1.0))
        priority = priority.repeat_interleave(int(cell[0]), 0).repeat_interleave(int(cell[1]), 1)[:height, :width]
        short = (height - priority.shape[0], width - priority.shape[1])
        if max(short) > 0:  # only if a caller's trunk rounds down; pixels under no cell are never tokens
            priority = F.pad(priority, (0, max(short[1], 0), 0, max(short[0], 0)), value=-1.0)
        if growth_px > 0:
            priority = F.max_pool2d(priority[None, None], 2 * growth_px + 1, 1, growth_px)[0, 0]
        priority = priority.flatten()
        order = torch.sort(priority, descending=True, stable=True).indices
        n_kept = min(int((priority >= 0).sum()), max_tokens)
        out.append(torch.sort(order[:n_kept]).values)
    return out
