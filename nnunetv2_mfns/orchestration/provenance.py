"""`<workdir>/provenance.json`: what the head-to-head actually ran, shown in the report.

The training schedule and the test-time mirroring are read from what nnU-Net itself recorded in each
fold folder (`debug.json`, written by nnUNetTrainer.on_train_start: every trainer attribute as a
string), not from what we asked for, so a trainer that overrides the budget or stores no mirroring axes
is reported as it ran. `provenance["training"]` is read by the report (evaluation/report.py).
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from nnunetv2_mfns.budget_table import BUDGETS, FULL_BUDGET
from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.orchestration.methods import Method

if TYPE_CHECKING:  # the pipeline imports this module
    from nnunetv2_mfns.orchestration.pipeline import Pipeline


def trainer_record(model_folder: Path) -> Optional[dict]:
    """nnU-Net's debug.json of a fold folder, or None when it is absent or unreadable."""
    try:
        doc = read_json_file(Path(model_folder) / "debug.json")
    except MfnsInputError:
        return None
    return doc if isinstance(doc, dict) else None


def mirroring_axes(record: Optional[dict]) -> Optional[tuple]:
    """The mirroring axes nnU-Net stored with the model (debug.json's string, e.g. '(0, 1)' or 'None');
    None when none are stored or the record is missing."""
    value = (record or {}).get("inference_allowed_mirroring_axes")
    if value in (None, "None"):
        return None
    try:
        axes = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    return tuple(axes) if isinstance(axes, (tuple, list)) and axes else None


def _int_field(records: list[dict], key: str) -> Optional[int]:
    values = {r.get(key) for r in records if r.get(key) not in (None, "None")}
    if len(values) != 1:
        return None  # missing, or folds that disagree (reported as None rather than guessed)
    try:
        return int(values.pop())
    except (TypeError, ValueError):
        return None


def _budget_schedule(budget: str) -> tuple[Optional[int], Optional[int]]:
    if budget == FULL_BUDGET:
        return None, None
    return BUDGETS[budget].epochs, BUDGETS[budget].iterations


def tta_description(tta: bool, axes: set) -> str:
    if not tta:
        return "off (--disable_tta)"
    if axes == {None}:
        return "requested, but the model stores no mirroring axes: nnUNetv2_predict ran without mirroring"
    if None in axes:
        return "mixed: some folds' models store no mirroring axes (those predicted without mirroring)"
    return "; ".join(f"on: mirroring over axes {a} (stored in the checkpoint)" for a in sorted(axes, key=str))


def training_section(pipe: "Pipeline") -> dict:
    """{method: {trainer, configuration, budget, epochs, iterations_per_epoch, checkpoint, model_folders,
    test_time_augmentation, split_digests}} for the folds of this call."""
    from nnunetv2_mfns.orchestration.digests import read_digest

    c = pipe.cfg
    out = {}
    pipes = pipe.seed_pipelines()
    for m in c.methods:
        if m.non_learned:  # Frangi / local contrast: nothing trained, no model folder, no budget
            out[m.name] = {"trainer": "none", "configuration": "none", "budget": "none (no training)",
                           "epochs": None, "iterations_per_epoch": None, "checkpoint": "none", "model_folders": [],
                           "test_time_augmentation": "not applicable", "split_digests": {},
                           "non_learned": f"non-learned {m.non_learned} detector (evaluation/detectors.py), its "
                                          "parameters tuned on each fold's training cases only"}
            continue
        folders = [p.layout.model_folder(m, f) for p in pipes for f in c.folds]
        records = [r for r in (trainer_record(d) for d in folders) if r is not None]
        epochs, iterations = _int_field(records, "num_epochs"), _int_field(records, "num_iterations_per_epoch")
        budget_ep, budget_it = _budget_schedule(c.budget)
        out[m.name] = {
            "trainer": m.trainer,
            "configuration": m.configuration,
            "budget": c.budget,
            "epochs": epochs if epochs is not None else budget_ep,
            "iterations_per_epoch": iterations if iterations is not None else budget_it,
            "checkpoint": c.checkpoint_file,
            "model_folders": [str(d) for d in folders],
            "test_time_augmentation": tta_description(c.tta, {mirroring_axes(r) for r in records} or {None}),
            "split_digests": {str(f): (read_digest(d) or {}).get("digest") for f, d in zip(c.folds, folders)},
        }
        if c.seeds > 1:  # model_folders are seed-major: seed 0's folds, then seed 1's, ...
            out[m.name]["training_seeds"] = list(range(c.seeds))
    return out


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def budget_description(budget: str) -> str:
    if budget == FULL_BUDGET:
        return "full: each trainer's own schedule (nnU-Net default 1000 epochs x 250 iterations)"
    b = BUDGETS[budget]
    extra = "" if b.validation_tta else ", no mirroring at nnU-Net's end-of-training validation"
    if b.curve_every:
        extra += f"; validation-group DSC recorded every {b.curve_every} epochs (learning_curve.csv)"
    if b.description.startswith("annealed"):  # issue 22: say what it is (curves flatten by construction)
        extra += f"; {b.description}"
    return (f"{budget}: {b.epochs} epochs x {b.iterations} training iterations ({b.val_iterations} validation "
            f"iterations{extra}) for every method")


def device_description(device: str, gpus: list[str]) -> str:
    if device == "cpu":
        return f"cpu ({os.cpu_count()} logical cores, {platform.processor() or platform.machine()})"
    try:
        import torch
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"cuda ({', '.join(names) or 'no GPU visible to the orchestrator'}; GPUs {gpus or 'default'})"
    except Exception as e:  # the report must still be written when the query fails
        return f"cuda (device query failed: {e})"


def build_provenance(pipe: "Pipeline") -> dict:
    from nnunetv2_mfns import __version__

    c = pipe.cfg
    steps = pipe.state.doc["steps"]
    training = training_section(pipe)
    tta = sorted({t["test_time_augmentation"] for t in training.values()})
    return {
        "mfns-compare command": pipe.state.doc["runs"][-1]["argv"],
        "dataset": pipe.name,
        "methods": [f"{m.name}: {m.configuration}, {m.trainer}" for m in c.methods],
        "training budget": budget_description(c.budget),
        "training": training,
        "folds": c.folds,
        "seeds": {"phantom": c.seed if c.phantom else None, "splits": c.seed, "report bootstrap": c.seed,
                  "training": "nnU-Net default (not seeded by nnU-Net)" if c.seeds == 1 else
                  f"{c.seeds} trainings per method x fold (seeds 0-{c.seeds - 1}: nnUNet_results/mfns_seeds/seed_k, "
                  f"MFNS_TRAINING_SEED=k in the training environment, which seeds torch, numpy and random in the "
                  f"plugin's trainers and the budget variants of the stock one; a full-budget stock nnUNetTrainer "
                  f"and augmentation worker processes stay unseeded)"},
        "test-time augmentation": tta[0] if len(tta) == 1 else
        "; ".join(f"{name}: {t['test_time_augmentation']}" for name, t in training.items()),
        "checkpoint used for testing": "checkpoint_final.pth (last epoch)" if c.checkpoint == "final" else
        "checkpoint_best.pth (best EMA pseudo-Dice on the fold's validation group)",
        "device": device_description(c.device, c.gpus),
        "versions": {"nnunetv2": _version("nnunetv2"), "torch": _version("torch"), "nnunetv2_mfns": __version__,
                     "python": platform.python_version()},
        "commands run (all calls of this workdir)": [
            f"{s['command']}  [{s['wall_s']} s, exit {s['returncode']}, {s['start']}]"
            for s in steps if "command" in s and s.get("kind") != "report"],
        "training wall time per method x fold (s)": {
            s["name"][len("train_"):]: s["wall_s"] for s in steps if s.get("kind") == "train" and s.get("wall_s")},
        "state file": str(pipe.state.path),
    }


def check_tta_possible(model_folder: Path, m: Method) -> Optional[str]:
    """With --tta: why nnUNetv2_predict would ignore it for this model (no mirroring axes stored), or None."""
    record = trainer_record(model_folder)
    if record is not None and mirroring_axes(record) is None:
        return (f"{Path(model_folder) / 'debug.json'}: {m.trainer} stores no mirroring axes with its model, so "
                f"nnUNetv2_predict would silently skip --tta; drop --tta or use a trainer that keeps mirroring")
    return None
