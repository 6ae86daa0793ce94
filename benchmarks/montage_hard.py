"""Montage of the `hard` phantom profile (issue 23): docs/phantom_hard_montage.png.

Two subjects (seed 0, the default cohort's subjects 4 and 8), BG and CSO rating slices. Columns: the acquired
image with the exact PVS truth (red) and the annotator-style training label (yellow); the confounder map
(sulcus, lacune, WMH, flow void, hyperintense focus; the cortical rim in grey); the noise-free acquisition
(Gibbs ringing at the CSF edges, motion blur); the image before k-space acquisition.

    python benchmarks/montage_hard.py --out docs/phantom_hard_montage.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnunetv2_mfns.dataset_conversion.phantom import SubjectSpec, make_demographics, simulate_subject  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom.hard import CONFOUNDER_BITS  # noqa: E402

COLOURS = {"sulcus": (0.2, 0.6, 1.0), "lacune": (1.0, 0.2, 1.0), "wmh": (1.0, 0.6, 0.0), "flow_void": (0.0, 1.0, 0.3),
           "hyperintense": (1.0, 1.0, 0.0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subjects", default="3,7", help="0-based indices into the default 20-subject cohort")
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demo = make_demographics(20, a.seed)
    idx = [int(i) for i in a.subjects.split(",")]
    fig, axes = plt.subplots(2 * len(idx), 4, figsize=(13, 6.6 * len(idx)), squeeze=False)
    for s, i in enumerate(idx):
        res = simulate_subject(SubjectSpec(f"PVS_{i + 1:03d}", f"sub-{i + 1:03d}", demo[i][0], demo[i][1], a.seed, i),
                               "hard")
        for r, region in enumerate(("BG", "CSO")):
            k = res.rating_slices[region]
            row = axes[2 * s + r]
            img = res.image[k][::-1]
            lo, hi = np.percentile(img, [1, 99.5])
            kw = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            row[0].imshow(img, **kw)
            row[0].contour(res.hard["label_exact"][k][::-1], [0.5], colors="red", linewidths=0.5)
            row[0].contour(res.label[k][::-1], [0.5], colors="yellow", linewidths=0.4)
            row[0].set_title(f"{res.spec.case_id} (age {demo[i][0]:.0f}) {region} slice {k}: acquired;\n"
                             f"red exact truth, yellow annotator label", fontsize=8)
            cmap = res.hard["confounder_map"][k][::-1]
            rgb = np.repeat(((cmap & CONFOUNDER_BITS["rim"]) > 0)[..., None] * 0.35, 3, axis=2)
            for t, c in COLOURS.items():
                m = (cmap & CONFOUNDER_BITS[t]) > 0
                rgb[m] = c
            row[1].imshow(rgb, interpolation="nearest")
            row[1].contour(res.hard["label_exact"][k][::-1], [0.5], colors="red", linewidths=0.4)
            row[1].set_title("confounders: sulcus blue, lacune magenta, WMH orange,\nflow void green, "
                             "hyperintense yellow, rim grey; PVS red", fontsize=8)
            row[2].imshow(res.noise_free[k][::-1], **kw)
            row[2].set_title("noise-free acquisition (0.9 mm k-space, zero-filled\nto 0.65 mm: Gibbs ringing, motion)",
                             fontsize=8)
            row[3].imshow(res.hard["clean"][k][::-1], **kw)
            row[3].set_title("object before acquisition (0.65 mm, partial volume)", fontsize=8)
            for ax in row:
                ax.axis("off")
    fig.suptitle("PVS phantom, hard profile (left hemisphere, 28 x 128 x 128 at 0.65 x 0.65 x 2 mm; anterior up, "
                 "left of image = lateral)", fontsize=10)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80, metadata={"Software": None})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
