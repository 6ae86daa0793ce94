"""`mfns-compare`: the head-to-head, MfNS_De against default nnU-Net on the paper's age-stratified folds.

Runs splits -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train / nnUNetv2_predict for every method x
fold -> mfns-report, each through the stock console scripts, resuming where a previous call stopped.
`mfns-compare --demo` is the README demo (10-subject demo phantom, MfNS_De vs nnU-Net 3d_fullres, budget
`demo`, folds 0-2 of the 5, CPU). See docs/head_to_head.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.methods import BUDGET_CHOICES

# The README demo runs 3 of the 5 folds (6 of the 10 subjects tested) so that it ends within 15 minutes on a
# 2-core CPU including pip install: a fold costs ~3 min there, most of it the stock 3d_fullres training
# (docs/results/demo_timing/README.md). `--folds 0,1,2,3,4` gives the full protocol.
DEMO = {"phantom": True, "n_subjects": 10, "seed": 0, "profile": "demo", "methods": "MfNS_De,nnUNet_3d",
        "budget": "demo", "folds": "0,1,2", "device": "cpu", "workdir": "mfns_demo"}
DEFAULTS = {"n_subjects": 20, "seed": 0, "profile": "demo", "methods": "MfNS_De,nnUNet_3d", "budget": "full",
            "folds": "0,1,2,3,4", "device": None, "workdir": "mfns_compare"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfns-compare",
        description="Train and compare segmentation methods (MfNS_De, stock nnU-Net, ...) on the same age-stratified "
                    "folds through nnU-Net's own commands, then evaluate and write a report. Resumable.")
    src = p.add_argument_group("data (one of)")
    src.add_argument("-d", "--dataset", help="existing raw dataset in $nnUNet_raw (id or DatasetXXX_Name) with subjects.json")
    src.add_argument("--phantom", action="store_true", default=None, help="generate the synthetic phantom cohort first")
    src.add_argument("--demo", action="store_true",
                     help="README demo preset: 10-subject demo phantom, seed 0, MfNS_De,nnUNet_3d, budget demo, folds "
                          "0,1,2 of the 5 (--folds 0,1,2,3,4 for all), CPU, workdir ./mfns_demo, nnU-Net folders "
                          "inside the workdir (flags given override)")
    ph = p.add_argument_group("phantom")
    ph.add_argument("--n-subjects", type=int, help=f"phantom subjects (default {DEFAULTS['n_subjects']}, demo 10)")
    ph.add_argument("--profile", choices=["demo", "study", "hard", "realistic"],
                    help="phantom profile (default demo; study: the CPU study's 0.9 mm slab; hard: issue 23's "
                         "harder 0.65 mm left-hemisphere slab, scored on its exact labels)")
    ph.add_argument("--phantom-id", type=int, default=501, help="dataset id of the phantom (default 501)")
    ph.add_argument("--phantom-name", default="PVSPhantom", help="dataset name of the phantom (default PVSPhantom)")
    run = p.add_argument_group("protocol")
    run.add_argument("--methods", help="comma-separated: MfNS_De, nnUNet_3d, nnUNet_2d, UNet2D, IAANet, TriSegNet, "
                                       "ResEncM_3d (nnU-Net's ResEnc-M preset), Frangi / LocalContrast (non-learned, "
                                       "tuned on each fold's training cases), any trainer class "
                                       "name (2d) or TRAINER@3d_fullres (default MfNS_De,nnUNet_3d)")
    run.add_argument("--budget", choices=list(BUDGET_CHOICES),
                     help="training budget appended to every method's trainer, equal for all (default full; demo: "
                          "demo; study: the annealed 500-iteration budget of the CPU study, 20 x 25 iterations with each "
                          "trainer's LR schedule compressed into them and a learning curve on the validation group)")
    run.add_argument("--folds", help="comma-separated folds (default 0,1,2,3,4)")
    run.add_argument("--seed", type=int, help="seed of the phantom, the splits and the report's bootstrap (default 0)")
    run.add_argument("--seeds", type=int, default=1, metavar="K",
                     help="train every method x fold K times (seeds 0..K-1, each in nnUNet_results/mfns_seeds/seed_k) "
                          "so that the report tests at the level of fold x seed (default 1: one training per fold)")
    run.add_argument("--checkpoint", choices=["final", "best"],
                     help="checkpoint used on the test group: best (nnU-Net's checkpoint_best.pth, chosen on the "
                          "fold's validation group; the default with --budget full and study) or final (last epoch; the default "
                          "with the short budgets ci/demo/short)")
    run.add_argument("--tta", action="store_true",
                     help="test-time augmentation (nnU-Net's mirroring over the axes stored with the model) at "
                          "prediction; default off. Refused with --budget ci/demo, whose models store no mirroring "
                          "axes (nnUNetv2_predict would silently skip it)")
    ex = p.add_argument_group("execution")
    ex.add_argument("--device", choices=["cpu", "cuda"], help="default cuda if available, else cpu (demo: cpu)")
    ex.add_argument("--gpus", help="comma-separated GPU ids: folds run in parallel, one per GPU (needs --device cuda)")
    ex.add_argument("--workdir", type=Path, help="state, logs, predictions and report (default ./mfns_compare, demo ./mfns_demo)")
    ex.add_argument("--stage", choices=["all", "prepare"], default="all",
                    help="prepare: stop after phantom/splits/preprocessing (used by the SLURM prepare job)")
    ex.add_argument("--dry-run", action="store_true", help="print the commands it would run and exit")
    ex.add_argument("--emit-slurm", type=Path, metavar="DIR", help="write SLURM scripts (+ submit.sh) into DIR instead of running")
    ex.add_argument("--slurm-header", action="append", default=[], metavar="LINE",
                    help="extra '#SBATCH LINE' for every job, e.g. --slurm-header=--time=24:00:00 (repeatable)")
    ex.add_argument("--overwrite", action="store_true",
                    help="start over: regenerate phantom and splits, preprocess, retrain and re-predict everything")
    return p


def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip() != ""]
    except ValueError:
        raise MfnsInputError(f"{option} {value!r}: expected comma-separated integers") from None
    if not out:
        raise MfnsInputError(f"{option}: empty")
    return out


def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_config(args: argparse.Namespace):
    """Validated CompareConfig from parsed arguments (raises MfnsInputError before any work)."""
    from nnunetv2_mfns.orchestration.methods import resolve_methods
    from nnunetv2_mfns.orchestration.config import CompareConfig, child_env, default_checkpoint

    preset = DEMO if args.demo else DEFAULTS
    if args.demo and args.dataset:
        raise MfnsInputError("--demo generates its own phantom; it cannot be combined with --dataset")
    phantom = bool(args.phantom) or bool(args.demo)
    if phantom == bool(args.dataset):
        raise MfnsInputError("give exactly one of --dataset ID_OR_NAME, --phantom or --demo")
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else preset[key]  # noqa: E731
    workdir = Path(pick("workdir")).expanduser().resolve()
    device = pick("device") or _default_device()
    budget = pick("budget")
    specs = [s.strip() for s in pick("methods").split(",") if s.strip()]
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else []
    if not all(g.isdigit() for g in gpus):
        raise MfnsInputError(f"--gpus {args.gpus!r}: expected comma-separated GPU ids like 0,1")
    seed = pick("seed")
    if seed < 0:
        raise MfnsInputError(f"--seed must be >= 0, got {seed}")
    n_subjects = pick("n_subjects")
    if phantom and n_subjects < 5:
        raise MfnsInputError(f"--n-subjects must be >= 5 (5 age groups, one test group per fold), got {n_subjects}")
    env = child_env(dict(os.environ), workdir, device, demo=args.demo)
    methods = resolve_methods(specs, budget)
    return CompareConfig(workdir=workdir, methods=methods, method_specs=specs, budget=budget,
                         folds=_int_list(pick("folds"), "--folds"), device=device, gpus=gpus, seed=seed,
                         dataset=args.dataset, phantom=phantom, n_subjects=n_subjects, profile=pick("profile"),
                         phantom_id=args.phantom_id, phantom_name=args.phantom_name, tta=args.tta,
                         checkpoint=args.checkpoint or default_checkpoint(budget),
                         overwrite=args.overwrite, demo=args.demo, env=env, seeds=args.seeds)


def canonical_argv(cfg) -> list[str]:
    """The arguments that reproduce this configuration (for the SLURM prepare and report jobs); without
    --overwrite, so a requeued report job never retrains."""
    argv = ["--demo"] if cfg.demo else []
    if cfg.phantom:
        argv += ([] if cfg.demo else ["--phantom"]) + ["--n-subjects", str(cfg.n_subjects), "--profile", cfg.profile,
                                                       "--phantom-id", str(cfg.phantom_id),
                                                       "--phantom-name", cfg.phantom_name]
    else:
        argv += ["--dataset", str(cfg.dataset)]
    argv += ["--methods", ",".join(cfg.method_specs), "--budget", cfg.budget, "--folds", ",".join(map(str, cfg.folds)),
             "--seed", str(cfg.seed), "--device", cfg.device, "--workdir", str(cfg.workdir)]
    argv += ["--seeds", str(cfg.seeds)] if cfg.seeds > 1 else []
    return argv + (["--tta"] if cfg.tta else []) + ["--checkpoint", cfg.checkpoint]


def _terminate_as_interrupt(signum, frame):
    # SLURM and `kill` send SIGTERM: stop the running child and record the step like Ctrl-C does,
    # instead of dying and leaving an orphaned nnUNetv2_train behind
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw_argv)
    from nnunetv2_mfns.orchestration.pipeline import CompareStepError, Pipeline, exe
    from nnunetv2_mfns.orchestration.slurm import emit_slurm

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        cfg = make_config(args)
        pipe = Pipeline(cfg, out=say)
        if args.dry_run:
            print("\n".join(pipe.dry_run(args.stage)))
            return 0
        if args.emit_slurm:
            if cfg.seeds > 1:
                raise MfnsInputError("--emit-slurm with --seeds: not supported yet (the fold jobs would need one "
                                     "nnUNet_results per seed); run without --emit-slurm or with --seeds 1")
            written = emit_slurm(pipe, args.emit_slurm, canonical_argv(cfg), args.slurm_header, overwrite=args.overwrite)
            for p in written:
                print(f"wrote {p}")
            print(f"submit with: bash {written[-1]}")
            return 0
        say(f"mfns-compare: dataset {pipe.name}, methods {', '.join(m.name for m in cfg.methods)}, budget "
            f"{cfg.budget}, folds {','.join(map(str, cfg.folds))}, device {cfg.device}; workdir {pipe.workdir}")
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        try:
            report = pipe.run([exe("mfns-compare")] + raw_argv, stage=args.stage)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CompareStepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if report is None:
        say(f"prepared {pipe.name} in {pipe.workdir}")
    else:
        say(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
