"""Benchmark of the PVS phantom: wall time and peak memory of one demo and one realistic subject.

Each profile runs in its own fresh Python process so that peak RSS (ru_maxrss) belongs to that
profile alone; the one-off template preparation (nilearn load + derived masks, once per cohort
process) is timed separately from the subject. Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_phantom.py [--profiles demo realistic] [--json out.json]
        [--montage docs/phantom_montage.png]

`--montage` also draws the realistic subject's rating slices (full slice and a zoom, with label and
region contours) -- the image committed as docs/phantom_montage.png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(profile: str, montage: str | None) -> dict:
    import numpy as np

    from nnunetv2_mfns.dataset_conversion.phantom import SubjectSpec, simulate_subject
    from nnunetv2_mfns.dataset_conversion.phantom.anatomy import load_template
    from nnunetv2_mfns.dataset_conversion.phantom.cohort import _write
    from nnunetv2_mfns.dataset_conversion.phantom.measure import inplane_lengths, inplane_widths, lengths_3d

    t0 = time.perf_counter()
    load_template()
    t_tpl = time.perf_counter() - t0
    spec = SubjectSpec("PVS_001", "sub-001", 70.0, "F", seed=0, index=0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate_subject(spec, profile)
    t_sim, c_sim = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        _write(res.image, res.grid, Path(d) / "img.nii.gz")
        _write(res.label, res.grid, Path(d) / "lab.nii.gz")
        size_mb = sum(f.stat().st_size for f in Path(d).iterdir()) / 2 ** 20
    t_write = time.perf_counter() - t0
    widths = inplane_widths(res.label, res.grid.spacing)
    lengths = lengths_3d(res.label, res.grid.spacing)
    px = res.grid.spacing[1]
    k = res.rating_slices["CSO"]
    cso_len = inplane_lengths(res.label[k] * res.regions["CSO"][k], res.grid.spacing[1:])
    edge = np.zeros(res.image.shape[1:], bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    out = {"profile": profile, "shape_zyx": list(res.image.shape), "spacing_zyx": list(res.grid.spacing),
           "template_s": round(t_tpl, 2), "subject_s": round(t_sim, 2), "subject_cpu_s": round(c_sim, 2),
           "write_s": round(t_write, 2), "load_avg_1min": round(os.getloadavg()[0], 2),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
           "files_mib": round(size_mb, 2), "true_counts": res.true_counts, "rater_counts": res.rater_counts,
           "n_pvs": res.details["n_pvs_placed"], "n_confounders": res.details["n_confounders"],
           "label_width_mm_median_p95": [round(float(np.median(widths)), 2),
                                         round(float(np.percentile(widths, 95)), 2)],
           "label_length_mm_median_p95": [round(float(np.median(lengths)), 2),
                                          round(float(np.percentile(lengths, 95)), 2)],
           "label_width_px_median_p95": [round(float(np.median(widths)) / px, 2),
                                         round(float(np.percentile(widths, 95)) / px, 2)],
           "cso_slice_inplane_length_px_median_p90_max": [round(float(np.median(cso_len)) / px, 1),
                                                         round(float(np.percentile(cso_len, 90)) / px, 1),
                                                         round(float(cso_len.max()) / px, 1)],
           "rating_regions_touch_fov_edge": {r: bool((res.regions[r][res.rating_slices[r]] > 0)[edge].any())
                                             for r in ("BG", "CSO")},
           "cpu_count": os.cpu_count()}
    if montage:
        _montage(res, Path(montage))
    return out


def _montage(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 3, figsize=(13, 9))
    for i, r in enumerate(("BG", "CSO")):
        k = res.rating_slices[r]
        img, lab, reg = res.image[k][::-1], res.label[k][::-1], res.regions[r][k][::-1]
        lo, hi = np.percentile(img[img > 0], [1, 99.7])
        ys, xs = np.nonzero(reg)
        cy, cx = int(ys.mean()), int(xs.mean())
        h = 60
        crop = (slice(max(cy - h, 0), cy + h), slice(max(cx - int(1.4 * h), 0), cx + int(1.4 * h)))
        for j, (title, sl, contour) in enumerate((("slice", (slice(None), slice(None)), False),
                                                  ("zoom", crop, False), ("zoom + label/region", crop, True))):
            ax = axes[i, j]
            ax.imshow(img[sl], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if contour:
                ax.contour(reg[sl], levels=[0.5], colors="cyan", linewidths=0.7)
                ax.contour(lab[sl], levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(f"{r} rating slice {k}: {title} (true {res.true_counts[r]}, rater1 "
                         f"{res.rater_counts['rater1'][r]}, rater2 {res.rater_counts['rater2'][r]})", fontsize=8)
            ax.axis("off")
    s = res.grid.spacing
    fig.suptitle(f"PVS phantom, realistic profile ({s[1]} x {s[2]} x {s[0]} mm), age {res.spec.age:.0f}: "
                 "red = PVS label, cyan = rating region", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["demo", "study", "realistic"])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--montage", default=None, help="write the realistic subject's montage PNG here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.montage)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rows = []
    for prof in args.profiles:
        cmd = [sys.executable, __file__, "--worker", prof]
        if args.montage and prof == "realistic":
            cmd += ["--montage", args.montage]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    print("| profile | shape (z,y,x) | spacing mm | template (once) s | subject wall s | subject CPU s | write s "
          "| peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['shape_zyx']} | {r['spacing_zyx']} | {r['template_s']} | {r['subject_s']} | "
              f"{r['subject_cpu_s']} | {r['write_s']} | {r['peak_rss_gib']} |")
    for r in rows:
        print(r["profile"], json.dumps({k: r[k] for k in ("true_counts", "rater_counts", "n_pvs", "n_confounders",
                                                           "label_width_mm_median_p95", "label_length_mm_median_p95",
                                                           "label_width_px_median_p95",
                                                           "cso_slice_inplane_length_px_median_p90_max",
                                                           "rating_regions_touch_fov_edge",
                                                           "files_mib", "process_wall_s", "load_avg_1min")}))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
