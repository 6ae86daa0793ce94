"""Learning curves recorded inside nnU-Net's own training loop (issue 10).

A trainer with curve recording (the `study` budget, `budgets.py`) predicts its fold's validation cases every
`curve_every` epochs (and after the last epoch) with nnU-Net's sliding-window predictor (no mirroring, the
same for every method) and measures them with OUR evaluation (`evaluation.metrics.evaluate_case`: DSC, SEN,
PPV on the original-geometry volume), next to nnU-Net's pseudo-Dice of that epoch and its EMA. One row per
case and evaluation point goes to `learning_curve.csv` in the fold's output folder, so the same training
run that the head-to-head tests (`mfns-compare --budget study`) also gives the curve; no second training.

Each row records the training iterations so far, the training process's CPU seconds and the wall seconds of
the training epochs (evaluation excluded; with `nnUNet_n_proc_DA=0` augmentation runs in that process and
its CPU time is included). Resumable with nnU-Net's `--c`: the cumulative times live in
`learning_curve_state.json` (per finished epoch), an evaluation point already in the CSV is not repeated, and
one lost to an interruption after its checkpoint is taken when training resumes.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Dict, List, Type

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

# one name for writer and readers (the report, benchmarks/study_status.py)
from nnunetv2_mfns.evaluation.convergence import CURVE_FILE, CURVE_STATE_FILE, read_curve_rows
CURVE_FIELDS = ["trainer", "configuration", "fold", "epoch", "iterations", "cpu_s", "wall_s", "pseudo_dice",
                "ema_pseudo_dice", "group", "case", "dsc", "sen", "ppv"]


def evaluate_network(trainer: nnUNetTrainer, keys: Dict[str, List[str]]) -> List[dict]:
    """Predicts the given preprocessed cases (group -> case ids) with the trainer's current network and
    returns our metrics per case ({"group", "case", "dsc", "sen", "ppv"})."""
    import SimpleITK as sitk
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_mfns.evaluation.metrics import evaluate_case

    ds_on = trainer.enable_deep_supervision
    if ds_on:
        trainer.set_deep_supervision_enabled(False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=trainer.device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__, None)
    gt_dir = Path(trainer.preprocessed_dataset_folder_base) / "gt_segmentations"
    rows = []
    try:
        trainer.network.eval()
        for group, group_keys in keys.items():
            dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, group_keys)
            for k in dataset.identifiers:
                data, _, _, properties = dataset.load_case(k)
                with torch.no_grad():
                    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data[:]))
                seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits.cpu(), trainer.plans_manager, trainer.configuration_manager, trainer.label_manager,
                    properties)
                gt_img = sitk.ReadImage(str(gt_dir / f"{k}{trainer.dataset_json['file_ending']}"))
                gt = sitk.GetArrayFromImage(gt_img)
                m = evaluate_case(seg > 0, gt > 0, tuple(gt_img.GetSpacing()[::-1]))
                rows.append({"group": group, "case": k, "dsc": m["dsc"], "sen": m["sen"], "ppv": m["ppv"]})
    finally:
        if ds_on:
            trainer.set_deep_supervision_enabled(True)
        trainer.network.train()
    return rows


def append_curve_rows(path: Path, rows: List[dict], fields: List[str] = CURVE_FIELDS) -> None:
    new = not Path(path).is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)


def with_learning_curve(base: Type[nnUNetTrainer], curve_every: int) -> Type[nnUNetTrainer]:
    """`base` that records a learning-curve point every `curve_every` epochs and after the last one."""
    if curve_every < 1:
        raise ValueError(f"curve_every must be >= 1, got {curve_every}")

    class _WithCurve(base):
        def _curve_paths(self) -> tuple[Path, Path]:
            out = Path(self.output_folder)
            return out / CURVE_FILE, out / CURVE_STATE_FILE

        def _curve_state(self) -> dict:
            state_path = self._curve_paths()[1]
            return json.loads(state_path.read_text()) if state_path.is_file() else {"epochs": {}}

        def _record_curve_point(self, epoch: int) -> None:
            """Evaluates the validation group after `epoch` finished epochs (1-based) unless already done."""
            csv_path, _ = self._curve_paths()
            iterations = epoch * self.num_iterations_per_epoch
            if any(int(r["iterations"]) == iterations for r in read_curve_rows(csv_path)):
                return
            times = self._curve_state()["epochs"].get(str(epoch), {"cpu_s": float("nan"), "wall_s": float("nan")})
            pseudo = float(np.nanmean(self.logger.get_value("dice_per_class_or_region", step=epoch - 1)))
            ema = float(self.logger.get_value("ema_fg_dice", step=epoch - 1))
            t0 = time.perf_counter()
            rows = [dict(r, trainer=type(self).__name__, configuration=self.configuration_name, fold=self.fold,
                         epoch=epoch, iterations=iterations, cpu_s=round(times["cpu_s"], 2),
                         wall_s=round(times["wall_s"], 2), pseudo_dice=round(pseudo, 4), ema_pseudo_dice=round(ema, 4))
                    for r in evaluate_network(self, {"val": sorted(self.do_split()[1])})]
            append_curve_rows(csv_path, rows)
            self.print_to_log_file(f"learning curve: epoch {epoch}, {iterations} iterations, validation DSC "
                                   f"{np.mean([r['dsc'] for r in rows]):.4f} over {len(rows)} cases "
                                   f"(evaluation {time.perf_counter() - t0:.0f} s)")

        def on_train_start(self):
            super().on_train_start()
            # resumed right after a checkpoint whose evaluation point was interrupted: take it now
            if self.local_rank == 0 and self.current_epoch > 0 and (
                    self.current_epoch % curve_every == 0 or self.current_epoch == self.num_epochs):
                self._record_curve_point(self.current_epoch)

        def on_epoch_start(self):
            self._curve_t0 = (time.process_time(), time.perf_counter())
            super().on_epoch_start()

        def on_epoch_end(self):
            cpu0, wall0 = self._curve_t0
            epoch = self.current_epoch + 1  # finished epochs after this one (nnU-Net counts from 0)
            if self.local_rank == 0:
                state = self._curve_state()
                prev = state["epochs"].get(str(epoch - 1), {"cpu_s": 0.0, "wall_s": 0.0})
                state["epochs"][str(epoch)] = {"cpu_s": prev["cpu_s"] + time.process_time() - cpu0,
                                               "wall_s": prev["wall_s"] + time.perf_counter() - wall0}
                self._curve_paths()[1].write_text(json.dumps(state))
            super().on_epoch_end()
            if self.local_rank == 0 and (epoch % curve_every == 0 or epoch == self.num_epochs):
                self._record_curve_point(epoch)

    _WithCurve.__name__ = _WithCurve.__qualname__ = f"{base.__name__}_WithLearningCurve"
    return _WithCurve
