"""Learning curves: DSC on each fold's validation cases against training iterations and CPU seconds (issue 10).

The curve points are recorded by the trainers themselves (`nnunetv2_mfns/trainers/learning_curve.py`):
every k epochs a trainer predicts its fold's validation group with nnU-Net's sliding-window predictor (no
mirroring) and measures it with OUR evaluation (`evaluation.metrics.evaluate_case`), next to nnU-Net's
pseudo-Dice, into `learning_curve.csv` in its output folder. Two ways to train:

* `mfns-compare --budget study ...` (the head-to-head: every method's `_study` trainer records its curve
  while it trains, so one training gives both the curve and the tested model), then
  `python benchmarks/learning_curves.py report --results $nnUNet_results/DatasetXXX_Name --out docs/results/...`;
* `python benchmarks/learning_curves.py run --work DIR --trainers A,B --folds 0,1 --epochs E --iters I`
  for any budget: phantom, splits and preprocessing in DIR, each method x fold trained in its own
  subprocess through nnU-Net's `run_training` (resumable from checkpoint_latest.pth: rerun the command),
  then the same report.

Seeds: python/numpy/torch seeded with ``--seed`` at the start of a run, with ``seed + epoch`` when a run
resumes at ``epoch``. Phantom and splits: ``--seed`` too. Methods: a trainer class name (2d),
``NAME@3d_fullres``, or mfns-compare's method names ``MfNS_De``, ``UNet2D``, ``nnUNet_2d``, ``nnUNet_3d``.
Tables, figures and the raw copies (``report --copy-raw``): `nnunetv2_mfns.evaluation.learning_curves`.
"""
import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nnunetv2_mfns.evaluation.learning_curves import collect_rows, copy_raw_curves, write_outputs
from nnunetv2_mfns.orchestration.methods import parse_method_spec

def parse_method(spec: str) -> Tuple[str, str]:
    """A method as `mfns-compare` names it ('MfNS_De', 'nnUNetTrainerX', 'nnUNetTrainerX@3d_fullres')
    -> (trainer class name, configuration)."""
    _, configuration, trainer = parse_method_spec(spec)
    return trainer, configuration


def _env(work: Path, threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0",
               nnUNet_compile="false", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    return env


# ---- preparation: phantom, splits, plan + preprocess ------------------------------------------------------------
def prepare(work: Path, dataset_id: int, n_subjects: int, profile: str, seed: int, configs: List[str],
            env: Dict[str, str]) -> str:
    """Idempotent: generates the phantom, the paper's splits and nnU-Net's preprocessing once."""
    name = f"Dataset{dataset_id:03d}_PVSCurves"
    raw = work / "raw" / name
    if not (raw / "dataset.json").is_file():
        from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort
        generate_cohort(work / "raw", n_subjects=n_subjects, seed=seed, profile=profile, dataset_id=dataset_id,
                        dataset_name="PVSCurves", progress=False)
    pre = work / "preprocessed" / name
    if not (pre / "splits_final.json").is_file():
        subprocess.run([_exe("mfns-make-splits"), "-d", str(dataset_id), "--seed", str(seed), "--overwrite"],
                       env=env, check=True)
    missing = [c for c in configs if not (pre / f"nnUNetPlans_{c}").is_dir()]
    if missing or not (pre / "nnUNetPlans.json").is_file():
        from nnunetv2_mfns.orchestration.config import planner_env
        subprocess.run([_exe("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", *configs, "-np", "1",
                        "--verify_dataset_integrity"], env=planner_env(env), check=True)
    return name


def _exe(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


# ---- one trainer x fold (runs in its own subprocess) ------------------------------------------------------------
def _seed_all(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def budgeted_class(base: type, epochs: int, iters: int, val_iters: int, curve_every: int = 1) -> type:
    """``base`` with the curve budget: its own recipe, LR schedule over ``epochs``, checkpoint every epoch and
    a learning-curve point on the validation group every ``curve_every`` epochs (trainers/learning_curve.py)."""
    from nnunetv2_mfns.trainers.budgets import make_schedule_variant
    return make_schedule_variant(base, f"{base.__name__}__curve{epochs}x{iters}", epochs, iters, val_iters,
                                 validation_tta=True, module_name=__name__, curve_every=curve_every)


def train_one(args) -> int:
    """Trains one method on one fold through nnU-Net's own ``run_training``, resuming from
    checkpoint_latest.pth; the trainer writes learning_curve.csv into its output folder."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunetv2_mfns.orchestration.methods import find_trainer_class

    torch.set_num_threads(args.threads)
    trainer_name, configuration = parse_method(args.method)
    base = find_trainer_class(trainer_name)
    if base is None:
        raise SystemExit(f"trainer {trainer_name} not found")
    cls = budgeted_class(base, args.epochs, args.iters, args.val_iters, args.eval_every)
    name = maybe_convert_to_dataset_name(args.dataset_id)
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    folder = Path(get_output_folder(name, cls.__name__, "nnUNetPlans", configuration, args.fold))
    if (folder / "checkpoint_final.pth").is_file():
        print(f"{args.method} fold {args.fold}: finished earlier", flush=True)
        return 0
    plans = load_json(str(pre / "nnUNetPlans.json"))
    # nnU-Net's run_training passes --c inside the plans dict (the trainer pops it; its logger resumes with it)
    resume = plans["continue_training"] = (folder / "checkpoint_latest.pth").is_file()
    trainer = cls(plans, configuration, args.fold, load_json(str(pre / "dataset.json")), device=torch.device("cpu"))
    start_epoch = 0
    if resume:
        trainer.load_checkpoint(str(folder / "checkpoint_latest.pth"))
        start_epoch = trainer.current_epoch
    _seed_all(args.seed + start_epoch)
    print(f"{args.method}: {cls.__name__} {configuration} fold {args.fold}, start epoch {start_epoch}", flush=True)
    trainer.run_training()
    return 0


def _versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("torch", "nnunetv2")) + f", Python {platform.python_version()}"


def _machine(threads: int) -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch threads {threads}, "
            f"CPU only; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} when written")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Learning curves through nnU-Net's trainers (issue 10 item 2)")
    sub = p.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report", help="CSV + PNG + README from the learning_curve.csv files of a results folder")
    rep.add_argument("--results", type=Path, action="append", required=True,
                     help="nnU-Net results dataset folder ($nnUNet_results/DatasetXXX_Name); repeatable")
    rep.add_argument("--out", type=Path, required=True, help="output folder under docs/results (name with 'curve')")
    rep.add_argument("--meta", type=Path, help="JSON with title, commands, seed, budget, budget_iterations, machine")
    rep.add_argument("--notes-file", type=Path, help="Markdown appended to the README as 'Notes'")
    rep.add_argument("--folds", help="comma-separated folds to include (default: every fold found)")
    rep.add_argument("--copy-raw", action="store_true",
                     help="also copy every learning_curve.csv (finished or not, every fold) to "
                          "OUT/raw/<results folder>/fold_k.csv")
    for name in ("run", "_train"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True, help="folder for nnU-Net raw/preprocessed/results")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--dataset-id", type=int, default=611)
        s.add_argument("--epochs", type=int, required=True)
        s.add_argument("--iters", type=int, required=True, help="training iterations per epoch")
        s.add_argument("--val-iters", type=int, default=2, help="nnU-Net validation iterations per epoch (pseudo-Dice)")
        s.add_argument("--eval-every", type=int, default=1, help="learning-curve point every k epochs (and the last)")
        s.add_argument("--threads", type=int, default=1)
        if name == "run":
            s.add_argument("--trainers", required=True, help="comma-separated methods (aliases, class names, X@3d_fullres)")
            s.add_argument("--folds", default="0", help="comma-separated folds (default 0)")
            s.add_argument("--n-subjects", type=int, default=10)
            s.add_argument("--profile", default="demo")
            s.add_argument("--out", type=Path, help="write the report here when every run has finished")
            s.add_argument("--title", default="")
        else:
            s.add_argument("--fold", type=int, required=True)
            s.add_argument("--method", required=True)
    args = p.parse_args(argv)

    if args.cmd == "_train":
        return train_one(args)
    if args.cmd == "report":
        for given in [args.meta, args.notes_file, *args.results]:
            if given is not None and not given.exists():
                raise SystemExit(f"{given}: not found")
        meta = json.loads(args.meta.read_text()) if args.meta else {}
        meta.setdefault("versions", _versions())
        if args.notes_file:
            meta["notes"] = args.notes_file.read_text()
        rows = [r for res in args.results for r in collect_rows(res)]
        if args.folds:
            rows = [r for r in rows if r["fold"] in args.folds.split(",")]
        write_outputs(rows, args.out, meta)
        if args.copy_raw:
            n = sum(len(copy_raw_curves(res, args.out / "raw")) for res in args.results)
            print(f"{n} raw learning_curve.csv files copied to {args.out / 'raw'}")
        return 0

    work = args.work.resolve()
    env = _env(work, args.threads)
    methods = args.trainers.split(",")
    configs = sorted({parse_method(m)[1] for m in methods})
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    name = prepare(work, args.dataset_id, args.n_subjects, args.profile, args.seed, configs, env)
    meta = {"title": args.title or f"{args.profile} phantom, folds {args.folds}", "seed": args.seed,
            "commands": ["python benchmarks/learning_curves.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))],
            "budget": f"{args.epochs} epochs x {args.iters} iterations (each trainer's own recipe and batch size, LR "
                      f"schedule over this budget), {args.val_iters} nnU-Net validation iterations per epoch, a curve "
                      f"point every {args.eval_every} epochs, phantom profile {args.profile!r}, {args.n_subjects} subjects",
            "budget_iterations": args.epochs * args.iters, "machine": _machine(args.threads), "versions": _versions()}
    (work / "learning_curves_meta.json").write_text(json.dumps(meta, indent=1))
    for fold in [int(f) for f in args.folds.split(",")]:
        for m in methods:
            cmd = [sys.executable, __file__, "_train", "--work", str(work), "--seed", str(args.seed),
                   "--dataset-id", str(args.dataset_id), "--fold", str(fold), "--epochs", str(args.epochs),
                   "--iters", str(args.iters), "--val-iters", str(args.val_iters), "--eval-every", str(args.eval_every),
                   "--threads", str(args.threads), "--method", m]
            rc = subprocess.run(cmd, env=env).returncode
            if rc != 0:
                print(f"{m} fold {fold}: training failed (rc {rc}); rerun the same command to resume", file=sys.stderr)
                return rc
    if args.out:
        write_outputs(collect_rows(work / "results" / name), args.out, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
