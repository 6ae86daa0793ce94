"""`mfns-predict`: new T2w scans in, PVS masks and per-subject PVS burden reports out.

INPUT: a BIDS folder, a folder of .nii/.nii.gz files with any names, or single files. The model: as for
nnUNetv2_predict (-d -c -tr [-p] [-f] [-chk]) or -m MODEL_FOLDER (a training output folder or an unzipped
nnUNetv2_export_model_to_zip archive). Writes masks named after the inputs (BIDS-Derivatives names for BIDS
input), and unless --no-report: rating slices and regions (registration to MNI152), per-PVS census,
labelled components, visual-rating categories, one report per scan and census.csv, stats.csv, index.html.
Each scan's outputs appear when that scan is done; a rerun skips finished scans (resumable after a kill).

Exit codes: 0 every scan done; 2 bad input or arguments (one line naming the file; nothing written);
3 finished, but some scans need attention (rating slices not found: mask and census written, report and
stats.csv say why; or a scan failed: listed, rerun to retry). 128+N: killed by signal N.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfns-predict", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                epilog="Example: mfns-predict /data/bids -o /data/pvs -d 501 -c 2d -tr nnUNetTrainerMfNSDe "
                                       "-f 0 1 2 3 4 -chk checkpoint_best.pth")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="BIDS folder, folder of NIfTI files, folder of DICOM series, or NIfTI files")
    p.add_argument("-o", dest="out", required=True, type=Path, help="output folder")
    p.add_argument("-d", dest="dataset", help="dataset id or name the model was trained on")
    p.add_argument("-c", dest="configuration", help="nnU-Net configuration (e.g. 2d for MfNS_De, 3d_fullres)")
    p.add_argument("-tr", dest="trainer", help="trainer class (default nnUNetTrainer, as nnUNetv2_predict)")
    p.add_argument("-p", dest="plans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", dest="folds", nargs="+", help="folds to ensemble (default: every fold with the checkpoint)")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file name (default checkpoint_final.pth)")
    p.add_argument("-m", dest="model_dir", type=Path,
                   help="model folder (training output or unzipped nnUNetv2_export_model_to_zip) instead of -d/-c/-tr")
    p.add_argument("-device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (nnU-Net default 0.5)")
    p.add_argument("--no-report", action="store_true", help="masks only: no rating slices, census or report")
    p.add_argument("--rating-slices", metavar="BG,CSO|FILE.json",
                   help="rating slice indices (0-based, numpy axis 0) for every scan, or a JSON file "
                        "{scan name: {\"BG\": i, \"CSO\": j}}; they override the automatic ones")
    p.add_argument("--deformable", action="store_true", help="add a deformable stage to the MNI152 registration")
    p.add_argument("--threshold", metavar="P", help="PVS where its probability >= P, 0 < P < 1 (default: nnU-Net's "
                   "argmax, i.e. today's masks)")
    p.add_argument("--min-size", metavar="N|Vmm3", help="remove PVS components smaller than N voxels or V mm^3 "
                   "(26-connected; default: keep all)")
    p.add_argument("--num-parts", default="1", metavar="N", help="split the scans into N parts "
                   "(like nnUNetv2_predict -num_parts); a part writes no cohort files: run --merge after all parts")
    p.add_argument("--part-id", default="0", metavar="K", help="which part this run does, 0..N-1")
    p.add_argument("--merge", action="store_true", help="only build census.csv, stats.csv, index.html in -o from the "
                   "finished scans there (after sharded runs); no INPUT or model needed")
    p.add_argument("--emit-slurm", metavar="DIR", type=Path, help="write an sbatch array over --num-parts parts, a "
                   "merge job and submit.sh into DIR instead of running")
    p.add_argument("--slurm-header", action="append", default=[], metavar="LINE",
                   help="extra #SBATCH line for --emit-slurm, written --slurm-header=--time=04:00:00 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="redo scans already done and replace existing outputs in -o")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    return p


def parse_rating_slices(value: str | None) -> dict | None:
    """`BG,CSO` (applies to every scan: key "*") or a JSON file {name: {"BG": i, "CSO": j}}."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) == 2 and all(x.strip().lstrip("-").isdigit() for x in parts):
        bg, cso = (int(x) for x in parts)
        if bg < 0 or cso < 0:
            raise MfnsInputError(f"--rating-slices {value}: slice indices are 0-based and non-negative")
        return {"*": {"BG": bg, "CSO": cso}}
    path = Path(value)
    if not path.is_file():
        raise MfnsInputError(f"--rating-slices {value}: neither BG,CSO indices nor an existing JSON file")
    from nnunetv2_mfns.errors import read_json_file
    data = read_json_file(path)
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and set(v) <= {"BG", "CSO"} and
        all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v.values()) for v in data.values())
    if not ok:
        raise MfnsInputError(f"{path}: expected {{scan name: {{\"BG\": index, \"CSO\": index}}}}")
    return data


EXIT_ATTENTION = 3  # finished, but some scans need attention (rating slices not found, or failed)


def _int_flag(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MfnsInputError(f"{flag} {value}: expected an integer") from None


def _check_parts(args) -> None:
    """One-line refusals for the sharding flags (argparse's own would print the usage too)."""
    args.num_parts = _int_flag("--num-parts", args.num_parts)
    args.part_id = _int_flag("--part-id", args.part_id)
    if args.num_parts < 1:
        raise MfnsInputError(f"--num-parts {args.num_parts}: must be >= 1")
    if not 0 <= args.part_id < args.num_parts:
        raise MfnsInputError(f"--part-id {args.part_id}: must be in 0..{args.num_parts - 1} (--num-parts {args.num_parts})")
    if args.merge and (args.inputs or args.emit_slurm or args.num_parts != 1):
        raise MfnsInputError("--merge takes only -o (the output folder of the parts)")
    if not args.merge and not args.inputs:
        raise MfnsInputError("no INPUT given")
    if args.emit_slurm is not None and args.no_report:
        raise MfnsInputError("--emit-slurm with --no-report: nothing to merge; run the parts without the merge")


def _part_argv(argv: list[str]) -> list[str]:
    """argv without --emit-slurm/--slurm-header/--num-parts/--part-id (and their values)."""
    drop = {"--emit-slurm", "--slurm-header", "--num-parts", "--part-id"}
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        key = a.split("=", 1)[0]
        if key in drop:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nnunetv2_mfns").setLevel(logging.WARNING if args.quiet else logging.INFO)
    # CPU inference next to nnU-Net: passive OpenMP waiting (see README, "Running nnU-Net on a small CPU")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from nnunetv2_mfns.inference.model import resolve_model
    from nnunetv2_mfns.inference.pipeline import PredictOptions, run_predict
    # a plain `kill` must still remove the hidden temporary folder in OUT: SIGTERM becomes SystemExit while we run
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_parts(args)
        if args.merge:
            from nnunetv2_mfns.inference.cohort_merge import merge_cohort
            merged = merge_cohort(args.out)
            return _report_cohort(args.out, merged["attention"], merged["failed"], merged["scans"])
        if args.step_size <= 0 or args.step_size > 1:
            raise MfnsInputError(f"-step_size {args.step_size}: must be in (0, 1]")
        from nnunetv2_mfns.inference.postprocess import parse_min_size, parse_threshold
        threshold, min_size = parse_threshold(args.threshold), parse_min_size(args.min_size)
        model = resolve_model(args.dataset, args.configuration, args.trainer, args.plans, args.model_dir, args.folds,
                              args.checkpoint)
        if args.emit_slurm is not None:
            from nnunetv2_mfns.inference.slurm_emit import emit_slurm
            part = _part_argv(argv)
            # array tasks may start in another folder: every path argument made absolute
            part = [str(Path(a).resolve()) if not a.startswith("-") and Path(a).exists() else a for a in part]
            i = part.index("-o") if "-o" in part else None
            if i is not None:
                part[i + 1] = str(args.out.resolve())
            for p in emit_slurm(args.emit_slurm, part, args.out, args.num_parts, args.slurm_header, args.overwrite):
                print(p)
            return 0
        opts = PredictOptions(report=not args.no_report, overwrite=args.overwrite, device=args.device,
                              tta=not args.disable_tta, step_size=args.step_size, deformable=args.deformable,
                              rating_slices=parse_rating_slices(args.rating_slices), progress=not args.quiet,
                              threshold=threshold, min_size=min_size, num_parts=args.num_parts, part_id=args.part_id)
        result = run_predict(args.inputs, args.out, model, opts)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    for s in result.done:
        print(f"{s['input']} -> {args.out / s['mask']}" + (f", {args.out / s['report']}" if "report" in s else ""))
    if result.skipped:
        print(f"{len(result.skipped)} scan(s) already done in {args.out}: skipped")
    if result.merged:
        print(f"cohort: {args.out / 'index.html'}, {args.out / 'census.csv'}, {args.out / 'stats.csv'}")
    elif args.num_parts > 1 and not args.no_report:
        print(f"part {args.part_id} of {args.num_parts} done; after every part: mfns-predict --merge -o {args.out}")
    return _report_cohort(args.out, result.attention, result.failed)


def _report_cohort(out: Path, attention: dict, failed: dict, n: int | None = None) -> int:
    if n is not None:
        print(f"cohort of {n} scans: {out / 'index.html'}, {out / 'census.csv'}, {out / 'stats.csv'}")
    for name, why in attention.items():
        print(f"attention: {name}: rating slices: not found ({why}); mask and census written", file=sys.stderr)
    for name, why in failed.items():
        print(f"attention: {name}: failed ({why}); no outputs, rerun to retry", file=sys.stderr)
    return EXIT_ATTENTION if attention or failed else 0


if __name__ == "__main__":
    sys.exit(main())
