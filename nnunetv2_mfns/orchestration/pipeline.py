"""The head-to-head pipeline (DESIGN.md section 8) as a list of stock console-script steps.

phantom (optional, `mfns-make-phantom`) -> splits (`mfns-make-splits`) -> `nnUNetv2_plan_and_preprocess`
-> per method x fold: `nnUNetv2_train` (with `--c` when an unfinished checkpoint exists) and
`nnUNetv2_predict` on that fold's test group -> `mfns-report` over all folds' test predictions.

Every step is a console script found next to sys.executable, run as a subprocess with its output in
`<workdir>/logs/<step>.log`; a failing step stops the run naming its log. What ran (or was skipped and
why) goes into `<workdir>/mfns_compare_state.json`, so a second call resumes: finished training
(checkpoint_final.pth) and finished predictions are skipped.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import queue
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.methods import Method
from nnunetv2_mfns.orchestration.state import CompareState, read_state, STATE_FILE

logger = logging.getLogger(__name__)

NNUNET_DIRS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# Defaults for CPU runs (a user's own values win). nnU-Net's 8 export processes make a 2-core machine
# 2-3x slower; GNU OpenMP's busy-waiting threads, next to nnU-Net's worker processes, made a MfNS_De
# forward pass 15x slower (3-5 s instead of 0.23 s, measured side by side), passive waiting avoids it.
CPU_ENV_DEFAULTS = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
                    "OMP_WAIT_POLICY": "PASSIVE"}
FILE_ENDING = ".nii.gz"
BIN = Path(sys.executable).parent


class CompareStepError(RuntimeError):
    """A step (subprocess) failed; the message names the step and its log file."""


@dataclass
class CompareConfig:
    """Everything one `mfns-compare` call needs. `env` is the environment of the child processes."""
    workdir: Path
    methods: list[Method]
    method_specs: list[str]
    budget: str
    folds: list[int]
    device: str = "cpu"
    gpus: list[str] = field(default_factory=list)
    seed: int = 0
    dataset: Optional[str] = None            # id or name of an existing raw dataset
    phantom: bool = False
    n_subjects: int = 10
    profile: str = "demo"
    phantom_id: int = 501
    phantom_name: str = "PVSPhantom"
    tta: bool = False
    checkpoint: str = "final"                # final | best (nnU-Net's checkpoint_best.pth, chosen on the validation group)
    overwrite: bool = False
    demo: bool = False
    n_groups: int = 5
    env: dict = field(default_factory=dict)

    @property
    def raw_root(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    @property
    def preprocessed_root(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"])

    @property
    def results_root(self) -> Path:
        return Path(self.env["nnUNet_results"])

    @property
    def configurations(self) -> list[str]:
        # nnU-Net plans 2d before 3d_fullres; keep that order and plan only what the methods need
        return [c for c in ("2d", "3d_fullres") if any(m.configuration == c for m in self.methods)]


def exe(name: str) -> str:
    """Absolute path of a console script of this environment (nnU-Net's and ours live next to python)."""
    return str(BIN / name)


def child_env(base: dict, workdir: Path, device: str, demo: bool) -> dict:
    """Environment for the children. nnU-Net's three folders must be set (by the user, or by --demo to
    folders inside the workdir). On CPU the export/augmentation workers are kept to 1: nnU-Net's default of
    8 export processes makes a 2-core machine 2-3x slower (DESIGN.md section 10)."""
    env = dict(base)
    if demo:
        for var in NNUNET_DIRS:
            env[var] = str(Path(workdir).resolve() / var)
    missing = [v for v in NNUNET_DIRS if not env.get(v)]
    if missing:
        raise MfnsInputError(f"${missing[0]} is not set: nnU-Net needs nnUNet_raw, nnUNet_preprocessed and "
                             f"nnUNet_results (or use --demo, which keeps them inside the workdir)")
    for var in NNUNET_DIRS:
        env[var] = str(Path(env[var]).expanduser().resolve())
    if device == "cpu":
        for var, value in CPU_ENV_DEFAULTS.items():
            env.setdefault(var, value)
    return env


def resolve_dataset_name(cfg: CompareConfig) -> str:
    """DatasetXXX_Name for --phantom (from its id and name) or --dataset (id or name, looked up in the
    raw folder like nnU-Net does, without importing nnunetv2.paths, which reads the env at import)."""
    if cfg.phantom:
        if not 1 <= cfg.phantom_id <= 999:
            raise MfnsInputError(f"--phantom-id must be in 1..999, got {cfg.phantom_id}")
        if not re.fullmatch(r"[A-Za-z0-9]+", cfg.phantom_name):
            raise MfnsInputError(f"--phantom-name must be letters and digits only, got {cfg.phantom_name!r}")
        return f"Dataset{cfg.phantom_id:03d}_{cfg.phantom_name}"
    d = str(cfg.dataset)
    if re.fullmatch(r"Dataset\d{3}_.+", d):
        name = d
    elif d.isdigit() and 1 <= int(d) <= 999:
        hits = sorted(p.name for p in cfg.raw_root.glob(f"Dataset{int(d):03d}_*") if p.is_dir()) \
            if cfg.raw_root.is_dir() else []
        if not hits:
            raise MfnsInputError(f"--dataset {d}: no Dataset{int(d):03d}_* folder in $nnUNet_raw ({cfg.raw_root})")
        if len(hits) > 1:
            raise MfnsInputError(f"--dataset {d}: several raw datasets have this id: {', '.join(hits)}")
        name = hits[0]
    else:
        raise MfnsInputError(f"--dataset {d!r}: expected an id (e.g. 501) or a name like Dataset501_PVS")
    raw = cfg.raw_root / name
    if not (raw / "dataset.json").is_file():
        raise MfnsInputError(f"--dataset {d}: {raw / 'dataset.json'} not found")
    if not (raw / "subjects.json").is_file():
        raise MfnsInputError(f"--dataset {d}: {raw / 'subjects.json'} not found (needed for the age-stratified "
                             f"splits; write it with mfns-convert-pd)")
    return name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MfnsInputError(f"{path}: cannot be read as JSON ({e})") from None


class Pipeline:
    """Builds and runs (or prints) the steps of one head-to-head."""

    def __init__(self, cfg: CompareConfig, out: Callable[[str], None] = print):
        self.cfg = cfg
        self.out = out
        self.name = resolve_dataset_name(cfg)
        # nnUNetv2_plan_and_preprocess only takes the numeric id; use it for every nnU-Net command
        self.dataset_id = str(int(self.name[len("Dataset"):len("Dataset") + 3]))
        self.workdir = Path(cfg.workdir).resolve()
        self.raw = cfg.raw_root / self.name
        self.pre = cfg.preprocessed_root / self.name
        self.results = cfg.results_root / self.name
        self.state: Optional[CompareState] = None
        self.ran_model_steps = False
        self._check_before_work()

    # ---------- checks that must fail before any work ----------
    def _check_before_work(self) -> None:
        cfg = self.cfg
        bad = [f for f in cfg.folds if not 0 <= f < cfg.n_groups]
        if not cfg.folds or bad:
            raise MfnsInputError(f"--folds: every fold must be in 0..{cfg.n_groups - 1}, got {cfg.folds}")
        if len(set(cfg.folds)) != len(cfg.folds):
            raise MfnsInputError(f"--folds: a fold is given twice: {cfg.folds}")
        if cfg.device not in ("cpu", "cuda"):
            raise MfnsInputError(f"--device {cfg.device!r}: must be cpu or cuda")
        if cfg.checkpoint not in ("final", "best"):
            raise MfnsInputError(f"--checkpoint {cfg.checkpoint!r}: must be final or best")
        if cfg.gpus and cfg.device != "cuda":
            raise MfnsInputError("--gpus needs --device cuda")
        if self.workdir.exists() and not self.workdir.is_dir():
            raise MfnsInputError(f"--workdir {self.workdir}: exists and is not a folder")
        doc = read_state(self.workdir / STATE_FILE)
        if doc is not None and doc.get("dataset") != self.name and not cfg.overwrite:
            raise MfnsInputError(f"{self.workdir / STATE_FILE}: this workdir belongs to dataset "
                                 f"{doc.get('dataset')!r}, not {self.name!r}; use another --workdir")
        if cfg.phantom:
            self._check_existing_phantom()
        splits_file = self.raw / "mfns_splits.json"
        if splits_file.is_file() and not cfg.overwrite:
            seed = _read_json(splits_file).get("seed")
            if seed != cfg.seed:
                raise MfnsInputError(f"{splits_file}: splits were made with seed {seed}, not --seed {cfg.seed}; "
                                     f"use --seed {seed} or --overwrite")

    def _check_existing_phantom(self) -> None:
        sj = self.raw / "subjects.json"
        if not self.raw.exists() or self.cfg.overwrite:
            return
        created = (_read_json(sj) if sj.is_file() else {}).get("created_by") or {}
        args = created.get("args") or {}
        have = (created.get("tool"), args.get("n_subjects"), args.get("seed"), (args.get("profile") or {}).get("name"))
        want = ("mfns-make-phantom", self.cfg.n_subjects, self.cfg.seed, self.cfg.profile)
        if have != want:
            raise MfnsInputError(f"{self.raw}: exists but is not the phantom asked for (n_subjects, seed, profile = "
                                 f"{have[1:]}, asked {want[1:]}); use --phantom-id, another $nnUNet_raw or --overwrite")

    # ---------- commands ----------
    def phantom_cmd(self) -> list[str]:
        c = self.cfg
        cmd = [exe("mfns-make-phantom"), "-o", str(c.raw_root), "-d", str(c.phantom_id), "--name", c.phantom_name,
               "--n-subjects", str(c.n_subjects), "--seed", str(c.seed), "--profile", c.profile]
        return cmd + (["--overwrite"] if c.overwrite else [])

    def splits_cmd(self) -> list[str]:
        cmd = [exe("mfns-make-splits"), "-d", self.dataset_id, "--seed", str(self.cfg.seed),
               "--n-groups", str(self.cfg.n_groups)]
        return cmd + (["--overwrite"] if self.cfg.overwrite else [])

    def plan_cmd(self) -> list[str]:
        return [exe("nnUNetv2_plan_and_preprocess"), "-d", self.dataset_id, "-c", *self.cfg.configurations,
                "--verify_dataset_integrity", "-np", "1"]

    def model_folder(self, m: Method, fold: int) -> Path:
        return self.results / m.results_subfolder / f"fold_{fold}"

    def test_input_dir(self, fold: int) -> Path:
        return self.workdir / "test_inputs" / f"fold_{fold}"

    def prediction_dir(self, m: Method, fold: int) -> Path:
        # predictions of the two checkpoints live apart, so switching --checkpoint never mixes them
        top = "predictions" if self.cfg.checkpoint == "final" else f"predictions_{self.cfg.checkpoint}"
        return self.workdir / top / m.name / f"fold_{fold}"

    def train_cmd(self, m: Method, fold: int, resume: bool) -> list[str]:
        cmd = [exe("nnUNetv2_train"), self.dataset_id, m.configuration, str(fold), "-tr", m.trainer,
               "-device", self.cfg.device]
        return cmd + (["--c"] if resume else [])

    def predict_cmd(self, m: Method, fold: int) -> list[str]:
        cmd = [exe("nnUNetv2_predict"), "-i", str(self.test_input_dir(fold)), "-o", str(self.prediction_dir(m, fold)),
               "-d", self.dataset_id, "-c", m.configuration, "-f", str(fold), "-tr", m.trainer, "-device", self.cfg.device]
        cmd += [] if self.cfg.tta else ["--disable_tta"]
        cmd += [] if self.cfg.checkpoint == "final" else ["-chk", f"checkpoint_{self.cfg.checkpoint}.pth"]
        return cmd + ["-npp", "1", "-nps", "1"]

    @property
    def reference(self) -> str:
        names = [m.name for m in self.cfg.methods]
        return "MfNS_De" if "MfNS_De" in names else names[0]

    def report_cmd(self) -> list[str]:
        cmd = [exe("mfns-report"), "--gt", str(self.raw / "labelsTr"), "--pred"]
        cmd += [f"{m.name}={self.prediction_dir(m, f)}" for m in self.cfg.methods for f in self.cfg.folds]
        cmd += ["--subjects", str(self.raw / "subjects.json"), "--splits", str(self.raw / "mfns_splits.json"),
                "--out", str(self.workdir / "report"), "--reference", self.reference, "--seed", str(self.cfg.seed),
                "--provenance", str(self.workdir / "provenance.json"), "--overwrite"]
        if len(self.cfg.folds) < self.cfg.n_groups:
            cmd.append("--allow-missing")  # cases of the folds not run have no prediction
        return cmd

    # ---------- what is done already ----------
    def phantom_done(self) -> bool:
        return (self.raw / "subjects.json").is_file() and not self.cfg.overwrite

    def splits_done(self) -> bool:
        f = self.raw / "mfns_splits.json"
        return f.is_file() and not self.cfg.overwrite and _read_json(f).get("seed") == self.cfg.seed

    def plan_done(self) -> bool:
        if self.cfg.overwrite or not (self.pre / "nnUNetPlans.json").is_file() or not (self.raw / "dataset.json").is_file():
            return False
        n = int(_read_json(self.raw / "dataset.json").get("numTraining", -1))
        return all(len(list((self.pre / f"nnUNetPlans_{c}").glob("*.pkl"))) == n for c in self.cfg.configurations)

    def train_status(self, m: Method, fold: int) -> str:
        """'final' (finished), 'latest' (interrupted, resume with --c) or 'none'."""
        folder = self.model_folder(m, fold)
        if (folder / "checkpoint_final.pth").is_file() and not self.cfg.overwrite:
            return "final"
        if (folder / "checkpoint_latest.pth").is_file() and not self.cfg.overwrite:
            return "latest"
        return "none"

    def test_cases(self, fold: int) -> list[str]:
        splits = _read_json(self.raw / "mfns_splits.json")
        for f in splits["folds"]:
            if f["fold"] == fold:
                return list(f["test"])
        raise MfnsInputError(f"{self.raw / 'mfns_splits.json'}: has no fold {fold}")

    def predictions_done(self, m: Method, fold: int) -> bool:
        d = self.prediction_dir(m, fold)
        return all((d / f"{c}{FILE_ENDING}").is_file() for c in self.test_cases(fold))

    def _planned_splits(self) -> Optional[dict]:
        """Splits for the dry run: the existing file, or (existing dataset) computed exactly as mfns-make-splits
        will; None when the dataset does not exist yet (phantom not generated)."""
        f = self.raw / "mfns_splits.json"
        if f.is_file() and not self.cfg.overwrite:
            return _read_json(f)
        if not (self.raw / "subjects.json").is_file() or (self.cfg.phantom and self.cfg.overwrite):
            return None
        from nnunetv2_mfns.dataset_conversion.splits import splits_from_subjects
        return splits_from_subjects(_read_json(self.raw / "subjects.json"), seed=self.cfg.seed,
                                    n_groups=self.cfg.n_groups, source=str(self.raw / "subjects.json"))

    def _input_files(self, case: str) -> list[Path]:
        files = sorted((self.raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{FILE_ENDING}"))
        if not files:
            raise MfnsInputError(f"{self.raw / 'imagesTr'}: no image for case {case}")
        return files

    # ---------- dry run ----------
    def dry_run(self, stage: str = "all") -> list[str]:
        """Every command this call would run, as shell lines (comments for skipped steps and notes)."""
        c = self.cfg
        lines = ["# mfns-compare dry run: the commands below, in order, are what it would run"]
        for var in NNUNET_DIRS + tuple(CPU_ENV_DEFAULTS):
            if var in c.env and (var in NNUNET_DIRS or os.environ.get(var) != c.env[var]):
                lines.append(f"export {var}={shlex.quote(c.env[var])}")
        lines.append(shlex.join(["mkdir", "-p", *[c.env[v] for v in NNUNET_DIRS]]))
        if c.phantom:
            lines.append(("# skip (dataset exists): " if self.phantom_done() else "") + shlex.join(self.phantom_cmd()))
        lines.append(("# skip (splits exist): " if self.splits_done() else "") + shlex.join(self.splits_cmd()))
        lines.append(("# skip (preprocessed): " if self.plan_done() else "") + shlex.join(self.plan_cmd()))
        splits = self._planned_splits()
        for fold in c.folds:
            d = self.test_input_dir(fold)
            lines.append(shlex.join(["mkdir", "-p", str(d)]))
            if splits is None:
                lines.append(f"# then link fold {fold}'s test cases (mfns_splits.json folds[{fold}].test, known once "
                             f"the dataset exists) from {self.raw / 'imagesTr'} into {d}; mfns-compare does this itself")
                continue
            test = next(f["test"] for f in splits["folds"] if f["fold"] == fold)
            for case in test:
                for src in self._input_files(case):
                    lines.append(shlex.join(["ln", "-sfn", str(src), str(d / src.name)]))
        if stage == "prepare":
            return lines
        for m in c.methods:
            for fold in c.folds:
                status = self.train_status(m, fold)
                lines.append(("# skip (checkpoint_final.pth exists): " if status == "final" else "")
                             + shlex.join(self.train_cmd(m, fold, resume=status == "latest")))
                done = status == "final" and splits is not None and self._predictions_done_for(splits, m, fold)
                lines.append(("# skip (predictions exist): " if done else "") + shlex.join(self.predict_cmd(m, fold)))
        lines.append(f"# {self.workdir / 'provenance.json'} is written by mfns-compare (commands, seeds, versions, timings)")
        lines.append(shlex.join(self.report_cmd()))
        return lines

    def _predictions_done_for(self, splits: dict, m: Method, fold: int) -> bool:
        test = next(f["test"] for f in splits["folds"] if f["fold"] == fold)
        return all((self.prediction_dir(m, fold) / f"{c}{FILE_ENDING}").is_file() for c in test)

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
        if self.cfg.phantom:
            if self.phantom_done():
                self.skip("phantom", "phantom", f"{self.raw} exists with the same n_subjects, seed and profile")
            else:
                self.out(f"generating phantom {self.name} ({self.cfg.n_subjects} subjects, {self.cfg.profile})")
                self.run_step("phantom", "phantom", self.phantom_cmd())
        if self.splits_done():
            self.skip("splits", "splits", f"{self.raw / 'mfns_splits.json'} exists (seed {self.cfg.seed})")
        else:
            self.out("writing age-stratified splits")
            self.run_step("splits", "splits", self.splits_cmd())
        if self.plan_done():
            self.skip("plan_and_preprocess", "plan", f"{self.pre} has plans and preprocessed data for "
                                                     f"{', '.join(self.cfg.configurations)}")
        else:
            self.out(f"planning and preprocessing ({', '.join(self.cfg.configurations)})")
            self.run_step("plan_and_preprocess", "plan", self.plan_cmd())
        for fold in self.cfg.folds:
            self._link_test_inputs(fold)

    def _link_test_inputs(self, fold: int) -> None:
        """A folder per fold holding links to that fold's test images, the input of nnUNetv2_predict.
        Links, never copies or edits: the user's raw data stays untouched."""
        d = self.test_input_dir(fold)
        d.mkdir(parents=True, exist_ok=True)
        wanted = {src.name: src for case in self.test_cases(fold) for src in self._input_files(case)}
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

    def train_and_predict(self, m: Method, fold: int, env: Optional[dict] = None) -> None:
        tag = f"{m.name}_fold{fold}"
        status = self.train_status(m, fold)
        trained = False
        if status == "final":
            self.skip(f"train_{tag}", "train", f"{self.model_folder(m, fold) / 'checkpoint_final.pth'} exists",
                      method=m.name, fold=fold)
        else:
            if status == "latest":
                self.out(f"{tag}: resuming interrupted training from checkpoint_latest.pth (--c)")
            self.run_step(f"train_{tag}", "train", self.train_cmd(m, fold, resume=status == "latest"), env,
                          method=m.name, fold=fold, resumed=status == "latest")
            trained = True
        if not trained and self.predictions_done(m, fold):
            self.skip(f"predict_{tag}", "predict", f"{self.prediction_dir(m, fold)} holds all test cases",
                      method=m.name, fold=fold)
        else:
            self.run_step(f"predict_{tag}", "predict", self.predict_cmd(m, fold), env, method=m.name, fold=fold)
            self.ran_model_steps = True
        self.ran_model_steps |= trained

    def train_all(self) -> None:
        from tqdm import tqdm

        jobs = [(m, f) for m in self.cfg.methods for f in self.cfg.folds]
        bar = tqdm(total=len(jobs), desc="train+predict (method x fold)", unit="fold", file=sys.stderr,
                   dynamic_ncols=True)
        try:
            if not self.cfg.gpus:
                for m, f in jobs:
                    bar.set_postfix_str(f"{m.name} fold {f}")
                    self.train_and_predict(m, f)
                    bar.update(1)
                return
            # one fold per GPU at a time; each child sees only its GPU
            free: queue.Queue = queue.Queue()
            for g in self.cfg.gpus:
                free.put(g)

            def work(m: Method, f: int) -> None:
                gpu = free.get()
                try:
                    self.out(f"{m.name} fold {f} on GPU {gpu}")
                    self.train_and_predict(m, f, env=dict(self.cfg.env, CUDA_VISIBLE_DEVICES=gpu))
                finally:
                    free.put(gpu)
                    bar.update(1)

            with ThreadPoolExecutor(max_workers=len(self.cfg.gpus)) as ex:
                futures = [ex.submit(work, m, f) for m, f in jobs]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for p in pending:
                    p.cancel()
                for fut in futures:
                    if fut.done() and not fut.cancelled() and fut.exception() is not None:
                        raise fut.exception()
        finally:
            bar.close()

    def provenance(self) -> dict:
        import importlib.metadata as md

        from nnunetv2_mfns import __version__

        def version(pkg: str) -> str:
            try:
                return md.version(pkg)
            except md.PackageNotFoundError:
                return "not installed"

        c = self.cfg
        budget = c.budget
        if budget != "full":
            from nnunetv2_mfns.trainers.budgets import BUDGETS
            ep, it, val = BUDGETS[budget][:3]  # later fields: budget options (e.g. validation TTA)
            extra = ""
            if len(BUDGETS[budget]) > 3 and BUDGETS[budget][3] is False:
                extra = ", no mirroring at nnU-Net's end-of-training validation"
            budget = (f"{budget}: {ep} epochs x {it} training iterations ({val} validation iterations{extra}) "
                      f"for every method")
        else:
            budget = "full: each trainer's own schedule (nnU-Net default 1000 epochs x 250 iterations)"
        steps = self.state.doc["steps"]
        return {
            "mfns-compare command": self.state.doc["runs"][-1]["argv"],
            "dataset": self.name,
            "methods": [f"{m.name}: {m.configuration}, {m.trainer}" for m in c.methods],
            "training budget": budget,
            "folds": c.folds,
            "seeds": {"phantom": c.seed if c.phantom else None, "splits": c.seed, "report bootstrap": c.seed,
                      "training": "nnU-Net default (not seeded by nnU-Net)"},
            "test-time augmentation": "on (nnU-Net mirroring)" if c.tta else "off (--disable_tta)",
            "checkpoint used for testing": "checkpoint_final.pth (last epoch)" if c.checkpoint == "final" else
            "checkpoint_best.pth (best EMA pseudo-Dice on the fold's validation group)",
            "device": self.device_description(),
            "versions": {"nnunetv2": version("nnunetv2"), "torch": version("torch"), "nnunetv2_mfns": __version__,
                         "python": platform.python_version()},
            "commands run (all calls of this workdir)": [
                f"{s['command']}  [{s['wall_s']} s, exit {s['returncode']}, {s['start']}]"
                for s in steps if "command" in s and s.get("kind") != "report"],
            "training wall time per method x fold (s)": {
                s["name"][len("train_"):]: s["wall_s"] for s in steps if s.get("kind") == "train" and s.get("wall_s")},
            "state file": str(self.state.path),
        }

    def device_description(self) -> str:
        if self.cfg.device == "cpu":
            return f"cpu ({os.cpu_count()} logical cores, {platform.processor() or platform.machine()})"
        try:
            import torch
            names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
            return f"cuda ({', '.join(names) or 'no GPU visible to the orchestrator'}; GPUs {self.cfg.gpus or 'default'})"
        except Exception as e:  # the report must still be written when the query fails
            return f"cuda (device query failed: {e})"

    def report(self) -> Path:
        report = self.workdir / "report" / "report.md"
        last = [s for s in self.state.steps(kind="report") if s.get("returncode") == 0]
        if report.is_file() and last and not self.ran_model_steps and not self.cfg.overwrite \
                and last[-1]["command"] == shlex.join(self.report_cmd()):
            self.skip("report", "report", f"{report} is up to date (no training or prediction ran)")
            return report
        (self.workdir / "provenance.json").write_text(json.dumps(self.provenance(), indent=1) + "\n")
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
            "folds": c.folds, "device": c.device, "gpus": c.gpus,
            "seeds": {"phantom": c.seed if c.phantom else None, "splits": c.seed, "report": c.seed},
            "phantom": {"n_subjects": c.n_subjects, "profile": c.profile, "seed": c.seed} if c.phantom else None,
            "env": {k: c.env[k] for k in NNUNET_DIRS + ("nnUNet_def_n_proc", "nnUNet_n_proc_DA") if k in c.env},
        })
        t0 = time.monotonic()
        try:
            self.prepare()
            if stage == "prepare":
                self.state.finish_run("prepared")
                return None
            self.train_all()
            report = self.report()
        except BaseException as e:
            self.state.finish_run(f"failed: {type(e).__name__}: {e}")
            raise
        self.state.finish_run(f"finished in {time.monotonic() - t0:.0f} s")
        return report
