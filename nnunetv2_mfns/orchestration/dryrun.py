"""`mfns-compare --dry-run`: every command the call would run, as shell lines, without creating anything.
Skipped steps are printed as comments with the reason, so the printout matches what a real run does."""
from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

from nnunetv2_mfns.orchestration.methods import DEFAULT_PLANS
from nnunetv2_mfns.orchestration.config import CPU_ENV_DEFAULTS, FILE_ENDING, NNUNET_DIRS
from nnunetv2_mfns.orchestration.digests import DIGEST_FILE, fold_lists, has_model, model_mismatch, split_digest
from nnunetv2_mfns.orchestration.seeds import SEED_ENV, env_prefix

if TYPE_CHECKING:  # the pipeline imports this module
    from nnunetv2_mfns.orchestration.pipeline import Pipeline


def dry_run_lines(pipe: "Pipeline", stage: str = "all") -> list[str]:
    c, lay, cmds = pipe.cfg, pipe.layout, pipe.commands
    lines = ["# mfns-compare dry run: the commands below, in order, are what it would run"]
    for var in NNUNET_DIRS + tuple(CPU_ENV_DEFAULTS):
        if var in c.env and (var in NNUNET_DIRS or os.environ.get(var) != c.env[var]):
            lines.append(f"export {var}={shlex.quote(c.env[var])}")
    lines.append(shlex.join(["mkdir", "-p", *[c.env[v] for v in NNUNET_DIRS]]))
    if c.phantom:
        lines.append(("# skip (dataset exists): " if lay.phantom_done() else "") + shlex.join(cmds.phantom()))
    lines.append(("# skip (splits exist): " if lay.splits_done() else "") + shlex.join(cmds.splits()))
    lines.append(("# skip (preprocessed): " if lay.plan_done() else "") + shlex.join(cmds.plan()))
    for plans in sorted({m.plans for m in c.methods if m.plans != DEFAULT_PLANS and not m.non_learned}):
        lines.append(("# skip (plans exist): " if (pipe.pre / f"{plans}.json").is_file() else "")
                     + shlex.join(cmds.plan_experiment(plans)))
    splits = lay.planned_splits()
    for fold in c.folds:
        d = lay.test_input_dir(fold)
        lines.append(shlex.join(["mkdir", "-p", str(d)]))
        if splits is None:
            lines.append(f"# then link fold {fold}'s test cases (mfns_splits.json folds[{fold}].test, known once "
                         f"the dataset exists) from {lay.raw / 'imagesTr'} into {d}; mfns-compare does this itself")
            continue
        for case in lay.test_cases(fold, splits):
            for src in lay.input_files(case):
                lines.append(shlex.join(["ln", "-sfn", str(src), str(d / src.name)]))
    if stage == "prepare":
        return lines
    for p in pipe.seed_pipelines():
        if p.cfg.training_seed is not None:
            lines.append(f"# seed {p.cfg.training_seed} of {c.seeds}: its own nnUNet_results "
                         f"({p.cfg.env['nnUNet_results']}), {SEED_ENV}={p.cfg.training_seed} for every child")
        for m in c.methods:
            for fold in c.folds:
                lines += _model_lines(p, m, fold, splits)
    lines.append(f"# {lay.workdir / 'provenance.json'} is written by mfns-compare (commands, seeds, versions, timings)")
    lines.append(shlex.join(pipe.report_cmd()))
    return lines


def _model_lines(pipe: "Pipeline", m, fold: int, splits) -> list[str]:
    if m.non_learned:  # no training: tuned on the fold's training cases and predicted in one step
        return [shlex.join(pipe.commands.non_learned(m, fold))]
    lay, cmds = pipe.layout, pipe.commands
    folder = lay.model_folder(m, fold)
    lines = []
    status = pipe.train_status(m, fold)
    if pipe.cfg.overwrite and has_model(folder):
        lines.append(f"# --overwrite: mfns-compare moves the model in {folder} to {folder.parent / 'mfns_stale'}/")
    if splits is not None and status != "none":
        why = model_mismatch(folder, split_digest(fold_lists(lay, fold, splits)))
        if why:
            lines.append(f"# {why}: mfns-compare moves it to {folder.parent / 'mfns_stale'}/ and retrains")
            status = "none"
    lines.append(f"# mfns-compare records the fold's lists in {folder / DIGEST_FILE}")
    env = env_prefix(pipe.cfg)
    lines.append(("# skip (checkpoint_final.pth exists): " if status == "final" else "")
                 + shlex.join(env + cmds.train(m, fold, resume=status == "latest")))
    done = status == "final" and splits is not None and _all_predicted(pipe, m, fold, splits)
    lines.append(("# skip (predictions exist): " if done else "") + shlex.join(env + cmds.predict(m, fold)))
    return lines


def _all_predicted(pipe: "Pipeline", m, fold: int, splits: dict) -> bool:
    from nnunetv2_mfns.orchestration.digests import predictions_complete, read_digest

    return predictions_complete(pipe.layout.prediction_dir(m, fold), read_digest(pipe.layout.model_folder(m, fold)),
                                pipe.cfg.checkpoint_file, pipe.layout.test_cases(fold, splits), FILE_ENDING)
