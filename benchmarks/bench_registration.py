"""Registration time of one realistic-profile subject (issue 13: under 60 s on 2 CPU cores).

Times, for one T2w scan: reading, the one-off template build (cached per process), the MNI152
registration (as timed inside `locate_rating_slices`) and the whole call, `--repeats` times, as wall
time and as CPU time of this process (all threads); records the machine's load (1-minute load average
before and after each repeat, CPU count, thread limit), because on a shared machine the load decides
the wall time while the CPU time does not. Writes a Markdown table to --out (or stdout).

    mfns-make-phantom -o /tmp/mfns_realistic20 --profile realistic --n-subjects 20 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/bench_registration.py \
        /tmp/mfns_realistic20/Dataset501_PVSPhantom/imagesTr/PVS_001_0000.nii.gz \
        --out docs/results/auto_rating_slices/registration_benchmark.md
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from nnunetv2_mfns.evaluation.rating_slices import locate_rating_slices
from nnunetv2_mfns.evaluation.registration import read_t2w
from nnunetv2_mfns.evaluation.template import load_mni_template


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deformable", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    command = "python benchmarks/bench_registration.py " + " ".join(argv if argv is not None else sys.argv[1:])

    t = time.perf_counter()
    img = read_t2w(args.image)
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    load_mni_template()
    t_tpl = time.perf_counter() - t
    rows = []
    for i in range(args.repeats):
        l0 = os.getloadavg()[0]
        t, c = time.perf_counter(), time.process_time()
        res = locate_rating_slices(img, deformable=args.deformable, seed=args.seed, source=args.image.name)
        t_loc, c_loc = time.perf_counter() - t, time.process_time() - c
        reg = res.registration
        rows.append((i + 1, reg["seconds"], t_loc, c_loc, reg["ncc_after"], res.bg_slice, res.cso_slice, l0,
                     os.getloadavg()[0]))

    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    lines = ["# Registration benchmark (one realistic-profile subject)", "", f"Command: `{command}`", "",
             f"Image: `{args.image.name}`, size {img.GetSize()}, spacing {tuple(round(s, 3) for s in img.GetSpacing())} mm. "
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (SimpleITK threads {threads}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), shared with other jobs.",
             f"Reading the image: {t_read:.1f} s; building the MNI152 template (once per process): {t_tpl:.1f} s.", "",
             "| repeat | registration wall (s) | whole call wall (s) | whole call CPU (s) | NCC | BG | CSO | load1 before "
             "| load1 after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.3f} | {r[5]} | {r[6]} | {r[7]:.1f} "
                     f"| {r[8]:.1f} |")
    lines += ["", "The load average counts runnable processes on the whole machine; with load L on "
              f"{os.cpu_count()} cores this job gets roughly min(1, {os.cpu_count()}/L) of the machine.", ""]
    text = "\n".join(lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
