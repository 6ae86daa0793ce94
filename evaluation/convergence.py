"""Was the validation curve still rising when training stopped? Read from nnU-Net's own training logs.

nnU-Net writes `training_log_<date>.txt` into each model folder (`nnUNetTrainer.print_to_log_file`); per
epoch it prints lines like
    2026-11-25 12:00:01.000000: Epoch 3
    2026-11-25 12:00:09.000000: Pseudo dice [np.float32(0.4321)]      (numpy >= 2; older numpy: [0.4321])
    2026-11-25 12:00:09.000000: Yayy! New best EMA pseudo Dice: 0.4012
The EMA pseudo-Dice is what nnU-Net selects `checkpoint_best.pth` on: ema_0 = d_0,
ema_e = 0.9 ema_(e-1) + 0.1 d_e with d_e the mean foreground pseudo-Dice of epoch e
(`nnunetv2.training.logging.nnunet_logger.nnUNetLogger.log`). nnU-Net prints the EMA only when it is a new
best, so it is recomputed here from every epoch's pseudo-Dice with the same formula. A run continued with
`--c` starts a new log file that repeats epochs from the last checkpoint on; the later file wins.
Torch-free text parsing, so the report can read logs of models trained elsewhere.

When the folder also holds `learning_curve.csv` (trainers with the `study` budget record our DSC on the fold's
validation cases every few epochs, nnunetv2_mfns/trainers/learning_curve.py), the rule is applied to that
curve instead (one value per evaluation point: the mean DSC over the validation cases): it is the metric the
report tests on, measured on whole validation volumes rather than nnU-Net's sampled patches.

Rising rule (ours; stated in every report that uses it): with n epochs and window w = max(2, n // 4), the curve
is *still rising* when the mean pseudo-Dice of the last w epochs exceeds that of the w epochs before by more
than `min_gain` (default 0.02 Dice); fewer than 2 w epochs are *too short to judge*. The raw per-epoch values
are compared, not the EMA: with decay 0.9 the EMA lags by about ten epochs, so on a short run it keeps rising
long after the pseudo-Dice has flattened (issue 10's 12-epoch MfNS_De curve: pseudo-Dice .63-.66 over the last
six epochs, EMA still +0.05 over the last two). On the issue-10 curves the rule calls stock 2d and stock
3d_fullres rising and MfNS_De, UNet2D and _NoAttention flat, as the issue's authors read them.
"""
from __future__ import annotations

import math
import re
import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError

EMA_DECAY = 0.9  # nnU-Net's nnUNetLogger
CURVE_FILE = "learning_curve.csv"  # written by nnunetv2_mfns/trainers/learning_curve.py (which imports this name)
CURVE_STATE_FILE = "learning_curve_state.json"  # its cumulative training times per finished epoch
DEFAULT_MIN_GAIN = 0.02
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2} [\d:.]+: "
_EPOCH = re.compile(_TIMESTAMP + r"Epoch (\d+)\s*$")
_PSEUDO = re.compile(_TIMESTAMP + r"Pseudo dice \[(.*)\]\s*$")
_NUMBER = re.compile(r"(?:np\.float(?:32|64)\()?\s*(nan|[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\)?")


@dataclass
class Convergence:
    """Validation curve of one model folder."""
    folder: str
    pseudo_dice: list[float]  # mean foreground pseudo-Dice per epoch, epoch 0 first
    ema: list[float]
    status: str               # "rising", "flat", "too short", "no log"
    gain: float               # mean of the last window minus the window before, NaN when not judged
    window: int
    validation_dsc: list[tuple[int, float]] = field(default_factory=list)  # (iterations, mean DSC) when recorded

    @property
    def final_ema(self) -> float:
        return self.ema[-1] if self.ema else math.nan

    def describe(self) -> str:
        if self.status == "no log":
            return "no finished epoch in a training_log_*.txt there"
        if self.validation_dsc:
            it, dsc = self.validation_dsc[-1]
            if self.status == "too short":
                return f"{len(self.validation_dsc)} validation-DSC point(s): too short to judge"
            return (f"{self.status} (validation DSC {dsc:.3f} after {it} iterations; mean DSC {self.gain:+.3f} from "
                    f"the {self.window} points before to the last {self.window})")
        if self.status == "too short":
            return f"{len(self.ema)} epoch(s): too short to judge"
        return (f"{self.status} (EMA pseudo-Dice {self.final_ema:.3f} after {len(self.ema)} epochs; mean pseudo-Dice "
                f"{self.gain:+.3f} from the {self.window} epochs before to the last {self.window})")


def _mean_of_list(text: str) -> float:
    vals = [float(v) for v in _NUMBER.findall(text)]
    finite = [v for v in vals if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def parse_training_log(text: str) -> dict[int, float]:
    """{epoch: mean foreground pseudo-Dice} from the text of one nnU-Net training log."""
    out: dict[int, float] = {}
    epoch = None
    for line in text.splitlines():
        m = _EPOCH.match(line)
        if m:
            epoch = int(m.group(1))
            continue
        m = _PSEUDO.match(line)
        if m and epoch is not None:
            out[epoch] = _mean_of_list(m.group(1))
    return out


def ema_curve(pseudo_dice: list[float]) -> list[float]:
    """nnU-Net's EMA of the per-epoch pseudo-Dice (a NaN epoch keeps the previous EMA, as a skipped value)."""
    ema: list[float] = []
    for d in pseudo_dice:
        if not ema:
            ema.append(d)
        elif math.isnan(d):
            ema.append(ema[-1])
        elif math.isnan(ema[-1]):
            ema.append(d)
        else:
            ema.append(EMA_DECAY * ema[-1] + (1 - EMA_DECAY) * d)
    return ema


def judge(pseudo_dice: list[float], min_gain: float = DEFAULT_MIN_GAIN) -> tuple[str, float, int]:
    """(status, gain, window) by the rising rule of the module docstring (NaN epochs are left out of the means)."""
    n = len(pseudo_dice)
    window = max(2, n // 4)
    if n < 2 * window:
        return "too short", math.nan, window
    last = [v for v in pseudo_dice[n - window:] if not math.isnan(v)]
    before = [v for v in pseudo_dice[n - 2 * window:n - window] if not math.isnan(v)]
    if not last or not before:
        return "too short", math.nan, window
    gain = sum(last) / len(last) - sum(before) / len(before)
    return ("rising" if gain > min_gain else "flat"), float(gain), window


def read_curve_rows(path: Path) -> list[dict]:
    """The rows of one learning_curve.csv as dicts of strings; [] when there is no such file."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_validation_dsc(model_folder: Path) -> list[tuple[int, float]]:
    """[(iterations, mean DSC over the validation cases)] from the folder's learning_curve.csv, [] without one."""
    path = Path(model_folder) / CURVE_FILE
    if not path.is_file():
        return []
    by_it: dict[int, list[float]] = defaultdict(list)
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                by_it[int(row["iterations"])].append(float(row["dsc"]))
    except (KeyError, ValueError) as e:
        raise MfnsInputError(f"{path}: not a learning curve (needs 'iterations' and 'dsc' columns): {e}") from None
    return [(it, sum(v) / len(v)) for it, v in sorted(by_it.items())]


def read_convergence(model_folder: Path | str, min_gain: float = DEFAULT_MIN_GAIN) -> Convergence:
    """Validation curve of one nnU-Net model folder (all its training_log_*.txt, oldest first)."""
    folder = Path(model_folder)
    if folder.exists() and not folder.is_dir():
        raise MfnsInputError(f"{folder}: is a file, expected an nnU-Net model folder")
    logs = sorted(folder.glob("training_log_*.txt")) if folder.is_dir() else []
    per_epoch: dict[int, float] = {}
    for log in logs:  # nnU-Net names them by start time, so name order is time order; later runs win
        per_epoch.update(parse_training_log(log.read_text(errors="replace")))
    if not per_epoch:
        return Convergence(str(folder), [], [], "no log", math.nan, 0)
    n = max(per_epoch) + 1
    dice = [per_epoch.get(e, math.nan) for e in range(n)]
    ema = ema_curve(dice)
    curve = read_validation_dsc(folder) if folder.is_dir() else []
    status, gain, window = judge([d for _, d in curve] if curve else dice, min_gain)
    return Convergence(str(folder), dice, ema, status, gain, window, curve)
