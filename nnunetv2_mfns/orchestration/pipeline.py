"""The head-to-head pipeline (docs/reference/design.md section 8) as a list of stock console-script steps.

phantom (optional, `mfns-make-phantom`) -> splits (`mfns-make-splits`) -> `nnUNetv2_plan_and_preprocess`
-> per method x fold: `nnUNetv2_train` (with `--c` when an unfinished checkpoint exists) and
`nnUNetv2_predict` on that fold's test group -> `mfns-report` over all folds' test predictions.

Every step is a console script found next to sys.executable, run as a subprocess with its output in
`<workdir>/logs/<step>.log`; a failing step stops the run naming its log. What ran (or was skipped and
why) goes into `<workdir>/mfns_compare_state.json`, so a second call resumes: finished training
(checkpoint_final.pth trained on the same fold lists, see digests.py) and finished predictions are skipped.

The parts live beside this module by concern: config (options, environment), layout (dataset lookup,
folders, checks), commands (argv of every step), digests (which split a model was trained on),
dryrun, scheduling (GPU-parallel folds) and provenance.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.jsonio import write_json_atomic
from nnunetv2_mfns.orchestration.commands import Commands
from nnunetv2_mfns.orchestration.config import (  # noqa: F401  (public names, imported from here by the CLI)
    CPU_ENV_DEFAULTS, FILE_ENDING, NNUNET_DIRS, CompareConfig, CompareStepError, child_env, default_checkpoint, exe,
    planner_env)
from nnunetv2_mfns.orchestration.digests import (fold_lists, has_model, model_mismatch, move_aside,
                                                 predictions_complete, read_digest, reset_prediction_dir, split_digest,
                                                 write_model_digest)
from nnunetv2_mfns.orchestration.dryrun import dry_run_lines
from nnunetv2_mfns.orchestration.layout import DatasetLayout, check_before_work
from nnunetv2_mfns.orchestration.methods import DEFAULT_PLANS, Method
from nnunetv2_mfns.orchestration.provenance import build_provenance, check_tta_possible
from nnunetv2_mfns.orchestration.scheduling import run_jobs
from nnunetv2_mfns.orchestration.seeds import seed_configs
from nnunetv2_mfns.orchestration.state import CompareState

logger = logging.getLogger(__name__)


class Pipeline:
    """Builds and runs (or prints) the steps of one head-to-head."""

    def __init__(self, cfg: CompareConfig, out: Callable[[str], None] = print):
        self.cfg = cfg
        self.out = out
        self.layout = DatasetLayout(cfg)
        self.commands = Commands(cfg, self.layout)
        self.name = self.layout.name
        self.dataset_id = self.layout.dataset_id
        self.workdir = self.layout.workdir
        self.raw, self.pre, self.results = self.layout.raw, self.layout.pre, self.layout.results
        self.state: Optional[CompareState] = None
        self.ran_model_steps = False
        self._seed_pipes: Optional[list["Pipeline"]] = None
        check_before_work(cfg, self.layout)

    def seed_pipelines(self) -> list["Pipeline"]:
        """[self], or with --seeds K one pipeline per seed (its own results root and prediction folders,
        orchestration/seeds.py), sharing this one's state file."""
        if self.cfg.seeds == 1 or self.cfg.training_seed is not None:
            return [self]
        if self._seed_pipes is None:
            self._seed_pipes = [Pipeline(c, self.out) for c in seed_configs(self.cfg)]
        for p in self._seed_pipes:
            p.state = self.state
        return self._seed_pipes

    def tag(self, m: Method, fold: int) -> str:
        seed = self.cfg.training_seed
        return f"{m.name}_fold{fold}" + ("" if seed is None else f"_seed{seed}")

    # ---------- commands (kept here for the SLURM writer and the tests) ----------
    def train_cmd(self, m: Method, fold: int, resume: bool) -> list[str]:
        return self.commands.train(m, fold, resume)

    def predict_cmd(self, m: Method, fold: int) -> list[str]:
        return self.commands.predict(m, fold)

    def report_cmd(self) -> list[str]:
        return self.commands.report([p.layout for p in self.seed_pipelines()])

    def dry_run(self, stage: str = "all") -> list[str]:
        """Every command this call would run, as shell lines (comments for skipped steps and notes)."""
        return dry_run_lines(self, stage)

    def train_status(self, m: Method, fold: int) -> str:
        """'final' (finished), 'latest' (interrupted, resume with --c) or 'none'; the split is checked apart."""
        folder = self.layout.model_folder(m, fold)
        if (folder / "checkpoint_final.pth").is_file() and not self.cfg.overwrite:
            return "final"
        if (folder / "checkpoint_latest.pth").is_file() and not self.cfg.overwrite:
            return "latest"
        return "none"

    # ---------- running ----------
    def run_step(self, name: str, kind: str, cmd: list[str], env: Optional[dict] = None, **extra) -> dict:
        """Runs one console script, output appended to logs/<name>.log; raises CompareStepError on failure."""
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        rec = self.state.begin_step({"name": name, "kind": kind, "command": shlex.join(cmd), "log": str(log), **extra})
        rc = -1
        try:
            with open(log, "a") as f:
                f.write(f"\n=== {rec['start']} {shlex.join(cmd)}\n")
                f.flush()
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.cfg.env,
                                    stdin=subprocess.DEVNULL).returncode
        finally:
            self.state.end_step(rec, rc)
        if rc != 0:
            raise CompareStepError(f"step {name} failed (exit code {rc}); see {log}")
        return rec

    def skip(self, name: str, kind: str, reason: str, **extra) -> None:
        self.out(f"skip {name}: {reason}")
        self.state.skip_step({"name": name, "kind": kind, **extra}, reason)

    def prepare(self) -> None:
        """Phantom, splits, plan/preprocess and the per-fold test-input folders."""
        lay, cmds = self.layout, self.commands
        if self.cfg.phantom:
            if lay.phantom_done():
                self.skip("phantom", "phantom", f"{self.raw} exists with the same n_subjects, seed and profile")
            else:
                self.out(f"generating phantom {self.name} ({self.cfg.n_subjects} subjects, {self.cfg.profile})")
                self.run_step("phantom", "phantom", cmds.phantom())
        if lay.splits_done():
            self.skip("splits", "splits", f"{self.raw / 'mfns_splits.json'} exists (seed {self.cfg.seed})")
        else:
            self.out("writing age-stratified splits")
            self.run_step("splits", "splits", cmds.splits())
        if lay.plan_done():
            self.skip("plan_and_preprocess", "plan", f"{self.pre} has plans and preprocessed data for "
                                                     f"{', '.join(self.cfg.configurations)}")
        else:
            self.out(f"planning and preprocessing ({', '.join(self.cfg.configurations)})")
            self.run_step("plan_and_preprocess", "plan", cmds.plan(), env=planner_env(self.cfg.env))
        for plans in sorted({m.plans for m in self.cfg.methods if m.plans != DEFAULT_PLANS and not m.non_learned}):
            if (self.pre / f"{plans}.json").is_file() and not self.cfg.overwrite:
                self.skip(f"plan_{plans}", "plan", f"{self.pre / (plans + '.json')} exists")
            else:
                self.run_step(f"plan_{plans}", "plan", cmds.plan_experiment(plans), env=planner_env(self.cfg.env))
        for fold in self.cfg.folds:
            self._link_test_inputs(fold)

    def _link_test_inputs(self, fold: int) -> None:
        """A folder per fold holding links to that fold's test images, the input of nnUNetv2_predict.
        Links, never copies or edits: the user's raw data stays untouched."""
        d = self.layout.test_input_dir(fold)
        d.mkdir(parents=True, exist_ok=True)
        wanted = {src.name: src for case in self.layout.test_cases(fold) for src in self.layout.input_files(case)}
        for p in d.iterdir():
            if p.name not in wanted:
                p.unlink()  # a stale link from older splits (--overwrite) would be predicted too
        for fname, src in wanted.items():
            link = d / fname
            if link.is_symlink() and os.readlink(link) == str(src):
                continue
            if link.exists() or link.is_symlink():
                link.unlink()
            os.symlink(src, link)

    def reconcile_model(self, m: Method, fold: int) -> dict:
        """Makes the model folder fit the current fold lists: a model trained on other lists (or of unknown
        lists, or any model under --overwrite) is moved aside, never reused; then the lists are recorded
        beside it. Returns the model's digest record."""
        tag = self.tag(m, fold)
        folder = self.layout.model_folder(m, fold)
        lists = fold_lists(self.layout, fold)
        digest = split_digest(lists)
        why = "--overwrite: start over" if self.cfg.overwrite and has_model(folder) else model_mismatch(folder, digest)
        if why:
            dest = move_aside(folder)
            msg = f"{tag}: {why}; moved the old model to {dest}, retraining on the current fold lists"
            self.out(msg)
            logger.warning(msg)
            self.state.note_step({"name": f"stale_{tag}", "kind": "stale_model", "method": m.name, "fold": fold,
                                  "moved_to": str(dest)}, why)
        return write_model_digest(folder, lists, digest, fold, m.trainer, m.configuration)

    def _predictions_current(self, m: Method, fold: int, model_doc: dict) -> bool:
        return predictions_complete(self.layout.prediction_dir(m, fold), model_doc, self.cfg.checkpoint_file,
                                    self.layout.test_cases(fold), FILE_ENDING)

    def run_non_learned(self, m: Method, fold: int, env: Optional[dict] = None) -> None:
        """A non-learned baseline: tuned on the fold's training cases and applied to its test cases in one step;
        skipped when its prediction folder holds every test case for the current fold lists."""
        from nnunetv2_mfns.cli.nonlearned_baseline import predictions_done

        tag = f"{m.name}_fold{fold}"
        pred = self.layout.prediction_dir(m, fold)
        if not self.cfg.overwrite and predictions_done(pred, fold_lists(self.layout, fold), m.non_learned):
            self.skip(f"nonlearned_{tag}", "predict", f"{pred} holds all test cases for the current fold lists",
                      method=m.name, fold=fold)
            return
        self.run_step(f"nonlearned_{tag}", "predict", self.commands.non_learned(m, fold), env, method=m.name, fold=fold)
        self.ran_model_steps = True

    def train_and_predict(self, m: Method, fold: int, env: Optional[dict] = None) -> None:
        if m.non_learned:
            return self.run_non_learned(m, fold, env)
        tag = self.tag(m, fold)
        model_doc = self.reconcile_model(m, fold)
        folder = self.layout.model_folder(m, fold)
        status = self.train_status(m, fold)
        trained = False
        if status == "final":
            self.skip(f"train_{tag}", "train", f"{folder / 'checkpoint_final.pth'} exists, trained on the same fold "
                                               f"lists (split digest {model_doc['digest'][:12]})",
                      method=m.name, fold=fold)
        else:
            if status == "latest":
                self.out(f"{tag}: resuming interrupted training from checkpoint_latest.pth (--c)")
            self.run_step(f"train_{tag}", "train", self.train_cmd(m, fold, resume=status == "latest"), env,
                          method=m.name, fold=fold, resumed=status == "latest", split_digest=model_doc["digest"])
            trained = True
        if self.cfg.tta:
            why = check_tta_possible(folder, m)
            if why:
                raise MfnsInputError(why)
        pred = self.layout.prediction_dir(m, fold)
        if not trained and self._predictions_current(m, fold, model_doc):
            self.skip(f"predict_{tag}", "predict", f"{pred} holds all test cases of this model and checkpoint",
                      method=m.name, fold=fold)
        else:
            reset_prediction_dir(pred, model_doc, folder, self.cfg.checkpoint_file)
            self.run_step(f"predict_{tag}", "predict", self.predict_cmd(m, fold), env, method=m.name, fold=fold,
                          split_digest=model_doc["digest"])
            self.ran_model_steps = True
        self.ran_model_steps |= trained

    def prepare_models_for_slurm(self) -> None:
        """The SLURM fold jobs run the stock commands directly, so the preparation job does the split checks
        for them: stale models moved aside, digests recorded, outdated prediction folders emptied."""
        for m in self.cfg.methods:
            for fold in self.cfg.folds:
                model_doc = self.reconcile_model(m, fold)
                if not self._predictions_current(m, fold, model_doc):
                    reset_prediction_dir(self.layout.prediction_dir(m, fold), model_doc,
                                         self.layout.model_folder(m, fold), self.cfg.checkpoint_file)

    def train_all(self) -> None:
        """Every method x fold (x seed, one seed after the other)."""
        for p in self.seed_pipelines():
            jobs = [(m, f) for m in p.cfg.methods for f in p.cfg.folds]
            run_jobs(jobs, lambda m, f, env, p=p: p.train_and_predict(m, f, env=env), p.cfg.gpus, p.cfg.env, p.out)
            self.ran_model_steps |= p.ran_model_steps

    def provenance(self) -> dict:
        return build_provenance(self)

    def report(self) -> Path:
        report = self.workdir / "report" / "report.md"
        last = [s for s in self.state.steps(kind="report") if s.get("returncode") == 0]
        if report.is_file() and last and not self.ran_model_steps and not self.cfg.overwrite \
                and last[-1]["command"] == shlex.join(self.report_cmd()):
            self.skip("report", "report", f"{report} is up to date (no training or prediction ran)")
            return report
        write_json_atomic(self.provenance(), self.workdir / "provenance.json", indent=1)
        self.out("evaluating and writing the report")
        self.run_step("report", "report", self.report_cmd())
        return report

    def run(self, argv: list[str], stage: str = "all") -> Optional[Path]:
        """Runs (resuming) the whole pipeline; returns report.md's path (None for stage 'prepare')."""
        c = self.cfg
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = CompareState.load_or_create(self.workdir, self.name, overwrite=c.overwrite)
        self.state.start_run({
            "argv": shlex.join(argv), "stage": stage, "methods": [m.__dict__ for m in c.methods], "budget": c.budget,
            "folds": c.folds, "device": c.device, "gpus": c.gpus, "checkpoint": c.checkpoint_file, "tta": c.tta,
            "seeds": {"phantom": c.seed if c.phantom else None, "splits": c.seed, "report": c.seed,
                      "training": list(range(c.seeds)) if c.seeds > 1 else None},
            "phantom": {"n_subjects": c.n_subjects, "profile": c.profile, "seed": c.seed} if c.phantom else None,
            "env": {k: c.env[k] for k in NNUNET_DIRS + ("nnUNet_def_n_proc", "nnUNet_n_proc_DA") if k in c.env},
        })
        t0 = time.monotonic()
        try:
            self.prepare()
            if stage == "prepare":
                self.prepare_models_for_slurm()
                self.state.finish_run("prepared")
                return None
            self.train_all()
            report = self.report()
        except BaseException as e:
            self.state.finish_run(f"failed: {type(e).__name__}: {e}")
            raise
        self.state.finish_run(f"finished in {time.monotonic() - t0:.0f} s")
        return report


__all__ = ["Pipeline", "CompareConfig", "CompareStepError", "child_env", "default_checkpoint", "exe",
           "NNUNET_DIRS", "CPU_ENV_DEFAULTS", "read_digest"]
