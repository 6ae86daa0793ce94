"""Where the head-to-head's data lives and the checks that must fail before any work.

`DatasetLayout` finds the raw dataset (as nnU-Net does, by id or name, without importing nnunetv2.paths,
which reads the environment at import), names every folder the pipeline reads or writes, reads the
splits and tells which preparation steps are done already. `check_before_work` refuses bad options and
workdirs that belong to another dataset before anything is created.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from nnunetv2_mfns.budget_table import BUDGETS, FULL_BUDGET
from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.orchestration.config import CHECKPOINTS, FILE_ENDING, CompareConfig
from nnunetv2_mfns.orchestration.methods import Method
from nnunetv2_mfns.orchestration.state import STATE_FILE, read_state

SPLITS_FILE = "mfns_splits.json"
NNUNET_SPLITS_FILE = "splits_final.json"


def resolve_dataset_name(cfg: CompareConfig) -> str:
    """DatasetXXX_Name for --phantom (from its id and name) or --dataset (id or name, looked up in the
    raw folder like nnU-Net does)."""
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


class DatasetLayout:
    """Folders and lookups of one dataset in one workdir."""

    def __init__(self, cfg: CompareConfig):
        self.cfg = cfg
        self.name = resolve_dataset_name(cfg)
        # nnUNetv2_plan_and_preprocess only takes the numeric id; use it for every nnU-Net command
        self.dataset_id = str(int(self.name[len("Dataset"):len("Dataset") + 3]))
        self.workdir = Path(cfg.workdir).resolve()
        self.raw = cfg.raw_root / self.name
        self.pre = cfg.preprocessed_root / self.name
        self.results = cfg.results_root / self.name

    # ---------- folders ----------
    def model_folder(self, m: Method, fold: int) -> Path:
        return self.results / m.results_subfolder / f"fold_{fold}"

    def test_input_dir(self, fold: int) -> Path:
        return self.workdir / "test_inputs" / f"fold_{fold}"

    def prediction_dir(self, m: Method, fold: int) -> Path:
        # predictions of the two checkpoints live apart, so switching --checkpoint never mixes them
        top = "predictions" if self.cfg.checkpoint == "final" else f"predictions_{self.cfg.checkpoint}"
        if self.cfg.training_seed is not None:  # --seeds: the report reads the seed from this folder name
            return self.workdir / top / m.name / f"seed_{self.cfg.training_seed}" / f"fold_{fold}"
        return self.workdir / top / m.name / f"fold_{fold}"

    # ---------- splits and cases ----------
    def read_splits(self) -> dict:
        return read_json_file(self.raw / SPLITS_FILE, "run mfns-make-splits first")

    def planned_splits(self) -> Optional[dict]:
        """The splits for the dry run: the existing file, or (existing dataset) computed exactly as
        mfns-make-splits will; None when the dataset does not exist yet (phantom not generated)."""
        f = self.raw / SPLITS_FILE
        if f.is_file() and not self.cfg.overwrite:
            return read_json_file(f)
        if not (self.raw / "subjects.json").is_file() or (self.cfg.phantom and self.cfg.overwrite):
            return None
        from nnunetv2_mfns.dataset_conversion.splits import splits_from_subjects
        return splits_from_subjects(read_json_file(self.raw / "subjects.json"), seed=self.cfg.seed,
                                    n_groups=self.cfg.n_groups, source=str(self.raw / "subjects.json"))

    def test_cases(self, fold: int, splits: Optional[dict] = None) -> list[str]:
        splits = splits if splits is not None else self.read_splits()
        for f in splits["folds"]:
            if f["fold"] == fold:
                return list(f["test"])
        raise MfnsInputError(f"{self.raw / SPLITS_FILE}: has no fold {fold}")

    def input_files(self, case: str) -> list[Path]:
        files = sorted((self.raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{FILE_ENDING}"))
        if not files:
            raise MfnsInputError(f"{self.raw / 'imagesTr'}: no image for case {case}")
        return files

    # ---------- what is done already ----------
    def phantom_done(self) -> bool:
        return (self.raw / "subjects.json").is_file() and not self.cfg.overwrite

    def splits_done(self) -> bool:
        f = self.raw / SPLITS_FILE
        return f.is_file() and not self.cfg.overwrite and read_json_file(f).get("seed") == self.cfg.seed

    def plan_done(self) -> bool:
        if self.cfg.overwrite or not (self.pre / "nnUNetPlans.json").is_file() or not (self.raw / "dataset.json").is_file():
            return False
        n = int(read_json_file(self.raw / "dataset.json").get("numTraining", -1))
        return all(len(list((self.pre / f"nnUNetPlans_{c}").glob("*.pkl"))) == n for c in self.cfg.configurations)


def check_before_work(cfg: CompareConfig, layout: DatasetLayout) -> None:
    """Refuses bad options, a workdir of another dataset, a phantom folder that is not the phantom asked
    for, splits of another seed and test-time augmentation that nnU-Net would silently skip."""
    if cfg.seeds < 1:
        raise MfnsInputError(f"--seeds must be >= 1, got {cfg.seeds}")
    bad = [f for f in cfg.folds if not 0 <= f < cfg.n_groups]
    if not cfg.folds or bad:
        raise MfnsInputError(f"--folds: every fold must be in 0..{cfg.n_groups - 1}, got {cfg.folds}")
    if len(set(cfg.folds)) != len(cfg.folds):
        raise MfnsInputError(f"--folds: a fold is given twice: {cfg.folds}")
    if cfg.device not in ("cpu", "cuda"):
        raise MfnsInputError(f"--device {cfg.device!r}: must be cpu or cuda")
    if cfg.checkpoint not in CHECKPOINTS:
        raise MfnsInputError(f"--checkpoint {cfg.checkpoint!r}: must be final or best")
    if cfg.gpus and cfg.device != "cuda":
        raise MfnsInputError("--gpus needs --device cuda")
    if cfg.tta and cfg.budget != FULL_BUDGET:
        _check_budget_allows_tta(cfg.budget)
    if layout.workdir.exists() and not layout.workdir.is_dir():
        raise MfnsInputError(f"--workdir {layout.workdir}: exists and is not a folder")
    doc = read_state(layout.workdir / STATE_FILE)
    if doc is not None and doc.get("dataset") != layout.name and not cfg.overwrite:
        raise MfnsInputError(f"{layout.workdir / STATE_FILE}: this workdir belongs to dataset "
                             f"{doc.get('dataset')!r}, not {layout.name!r}; use another --workdir")
    if cfg.phantom:
        _check_existing_phantom(cfg, layout)
    splits_file = layout.raw / SPLITS_FILE
    if splits_file.is_file() and not cfg.overwrite:
        seed = read_json_file(splits_file).get("seed")
        if seed != cfg.seed:
            raise MfnsInputError(f"{splits_file}: splits were made with seed {seed}, not --seed {cfg.seed}; "
                                 f"use --seed {seed} or --overwrite")


def _check_budget_allows_tta(budget: str) -> None:
    """The ci/demo trainers store no mirroring axes in their checkpoints (cheap end-of-training validation
    on CPU), and nnUNetv2_predict takes its mirroring axes only from the checkpoint: with them, --tta would
    silently predict without mirroring. Refused rather than faked outside nnU-Net's own predict command."""

    spec = BUDGETS.get(budget)
    if spec is not None and not spec.validation_tta:
        raise MfnsInputError(f"--tta with --budget {budget}: the {budget} trainers store no mirroring axes in their "
                             f"checkpoints, so nnUNetv2_predict would silently skip test-time augmentation; drop --tta "
                             f"or use --budget short or full")


def _check_existing_phantom(cfg: CompareConfig, layout: DatasetLayout) -> None:
    sj = layout.raw / "subjects.json"
    if not layout.raw.exists() or cfg.overwrite:
        return
    created = (read_json_file(sj) if sj.is_file() else {}).get("created_by") or {}
    args = created.get("args") or {}
    have = (created.get("tool"), args.get("n_subjects"), args.get("seed"), (args.get("profile") or {}).get("name"))
    want = ("mfns-make-phantom", cfg.n_subjects, cfg.seed, cfg.profile)
    if have != want:
        raise MfnsInputError(f"{layout.raw}: exists but is not the phantom asked for (n_subjects, seed, profile = "
                             f"{have[1:]}, asked {want[1:]}); use --phantom-id, another $nnUNet_raw or --overwrite")
