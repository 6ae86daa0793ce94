"""The stock nnU-Net predictor (`nnUNetPredictor`), loaded once and reused for one staged scan at a time.

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


class ScanPredictor:
    """nnU-Net's predictor, loaded once (network weights of every fold) and reused for each scan, so that a
    cohort costs one model load and memory stays bounded by one scan."""

    def __init__(self, model: ModelSpec, device: str = "auto", tta: bool = True, step_size: float = 0.5,
                 quiet: bool = True, progress: bool = True):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        dev = resolve_device(device)
        self.quiet = quiet
        self.sink = io.StringIO()
        # nnU-Net prints several lines per case; keep them for the log, show our progress bar instead
        with self._redirect():
            self.predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=tta,
                                             perform_everything_on_device=dev.type == "cuda", device=dev,
                                             verbose=False, verbose_preprocessing=False, allow_tqdm=progress)
            self.predictor.initialize_from_trained_model_folder(str(model.folder), model.folds,
                                                                checkpoint_name=model.checkpoint)
        logger.info("model %s, folds %s, %s, device %s, TTA %s", model.folder, list(model.folds), model.checkpoint,
                    dev.type, "on" if tta else "off")

    def _redirect(self):
        return contextlib.redirect_stdout(self.sink) if self.quiet else contextlib.nullcontext()

    def predict(self, staged: Path, out_truncated: Path, save_probabilities: bool = False) -> None:
        """Writes `<out_truncated>.nii.gz` (and `.npz` with the probabilities when asked)."""
        Path(out_truncated).parent.mkdir(parents=True, exist_ok=True)
        with self._redirect():
            self.predictor.predict_from_files_sequential([[str(staged)]], [str(out_truncated)],
                                                         save_probabilities=save_probabilities, overwrite=True)
