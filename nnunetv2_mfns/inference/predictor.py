"""The stock nnU-Net predictor (`nnUNetPredictor`) on staged scans, one case at a time with a progress bar.

Same defaults as `nnUNetv2_predict`: Gaussian-weighted sliding window with step 0.5, mirroring test-time
augmentation unless disabled, every requested fold ensembled by nnU-Net. nnU-Net's sequential path is used
(no preprocessing / export worker processes): on a small CPU the workers only compete with torch for cores,
and on a GPU the per-case cost is dominated by the network anyway.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError

from .model import ModelSpec

logger = logging.getLogger(__name__)


def resolve_device(name: str):
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise MfnsInputError(f"-device {name}: expected cpu, cuda or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise MfnsInputError("-device cuda: no CUDA GPU visible to torch; use -device cpu")
    return torch.device(name)


def predict_staged(model: ModelSpec, staged: list[Path], out_truncated: list[Path], device: str = "auto",
                   tta: bool = True, step_size: float = 0.5, quiet: bool = True, progress: bool = True) -> None:
    """Predicts every staged file (one channel each) into `<out_truncated>.nii.gz`."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    dev = resolve_device(device)
    sink = io.StringIO()
    # nnU-Net prints several lines per case; keep them for the log, show our progress bar instead
    redirect = contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext()
    with redirect:
        predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=tta,
                                    perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=progress)  # sliding-window bar (stderr)
        predictor.initialize_from_trained_model_folder(str(model.folder), model.folds, checkpoint_name=model.checkpoint)
    logger.info("model %s, folds %s, %s, device %s, TTA %s", model.folder, list(model.folds), model.checkpoint,
                dev.type, "on" if tta else "off")
    for src, dst in tqdm(list(zip(staged, out_truncated)), desc="predict", unit="scan", disable=not progress):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        with (contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext()):
            predictor.predict_from_files_sequential([[str(src)]], [str(dst)], save_probabilities=False, overwrite=True)
    logger.debug("nnU-Net output:\n%s", sink.getvalue())
