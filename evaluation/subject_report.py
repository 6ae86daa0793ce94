"""Per-subject PVS burden report (HTML + PDF) and the cohort's batch files (census.csv, stats.csv, index.html).

A subject's report folder holds: report.html (self-describing, links the figures), report.pdf (the same
figures and text, matplotlib's PdfPages), rating_slices.png (BG and CSO rating slices, rating region in
cyan, PVS outlined in red), pvs_projection.png (whole-brain PVS maximum-intensity projection, axial,
coronal, sagittal, over the mean T2w projection), census.csv (one row per PVS) and summary.json.
Every rating number is written with its convention (`rating_categories.CONVENTIONS`).
No timestamps are written, so the same inputs give the same files (registration seconds excepted).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from nnunetv2_mfns.jsonio import write_json_atomic  # noqa: E402

from .census import REGION_NAMES, CensusResult  # noqa: E402
from .rating_categories import CATEGORY_LABELS, CONVENTIONS  # noqa: E402

SHORT = {"protocol_slice_both_hemispheres": "protocol", "max_slice_one_hemisphere": "maxslice"}
SUBJECT_FILES = ("report.html", "report.pdf", "rating_slices.png", "pvs_projection.png", "census.csv", "summary.json")


def _window(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1)


def fig_rating_slices(image: np.ndarray, mask: np.ndarray, slices: dict, regions: dict, ratings: list[dict],
                      spacing_zyx: tuple[float, float, float], slice_source: dict | None = None):
    """Figure: the BG and CSO protocol slices with the rating region (cyan) and PVS outlines (red)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    lo, hi = _window(image)
    aspect = spacing_zyx[1] / spacing_zyx[2]
    for ax, name in zip(axes, ("BG", "CSO")):
        z = slices.get(name)
        ax.set_axis_off()
        if z is None:
            ax.set_title(f"{name}: no rating slice")
            continue
        ax.imshow(image[z], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        reg = regions.get(name)
        if reg is not None and np.any(reg[z]):
            ax.contour(reg[z] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        if np.any(mask[z]):
            ax.contour(mask[z] > 0, levels=[0.5], colors="red", linewidths=0.7)
        r = next((r for r in ratings if r["region"] == name and SHORT.get(r["convention"]) == "protocol"), None)
        src = (slice_source or {}).get(name, "?")
        count = "-" if r is None or r["count"] is None else f"{r['count']} PVS, category {r['category']}"
        ax.set_title(f"{name} slice {z} ({src}): {count}", fontsize=10)
    fig.suptitle("Rating slices: region cyan, PVS red (protocol slice, both hemispheres)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_pvs_projection(image: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, float, float],
                       superior_up: bool = True):
    """Figure: whole-brain PVS projection in three views (PVS voxels per line of sight; where it is non-zero it is the
    maximum-intensity projection of the mask) over the mean image projection."""
    sz, sy, sx = spacing_zyx
    views = [("axial (top view)", 0, sy / sx), ("coronal (front view)", 1, sz / sx), ("sagittal (side view)", 2, sz / sy)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (title, axis, aspect) in zip(axes, views):
        bg = image.mean(axis=axis)
        # PVS voxels along each ray (not just any/none), so that dense regions stand out from single PVS
        pv = (mask > 0).sum(axis=axis)
        lo, hi = _window(bg)
        origin = "lower" if (axis != 0 and superior_up) else "upper"
        ax.imshow(bg, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin, interpolation="nearest")
        top = max(2.0, float(np.percentile(pv[pv > 0], 99))) if np.any(pv) else 2.0
        ax.imshow(np.ma.masked_equal(pv, 0), cmap="autumn_r", vmin=1, vmax=top, alpha=0.9, aspect=aspect,
                  origin=origin, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"Whole-brain PVS projection ({int(np.count_nonzero(mask))} voxels; yellow 1 to red many PVS voxels "
                 f"along the line of sight)", fontsize=10)
    fig.tight_layout()
    return fig


def rating_columns(ratings: list[dict]) -> dict:
    """Flat {f"{region}_{convention short}_{field}": value} of the rating rows (for stats.csv)."""
    out = {}
    for r in ratings:
        k = f"{r['region']}_{SHORT.get(r['convention'], r['convention'])}"
        for f in ("count", "category", "slice", "hemisphere"):
            out[f"{k}_{f}"] = r[f]
    return out


def _fmt(v, nd=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _table(headers: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def qc_lines(info: dict) -> list[str]:
    """Plain-text QC lines: registration quality and where the slices came from."""
    reg = info.get("registration") or {}
    lines = []
    if reg:
        sim = reg.get("ncc_after")
        lines.append(f"Registration to MNI152 ({reg.get('transform', '?')}): {'OK' if reg.get('ok') else 'FAILED'}; "
                     f"normalised correlation {_fmt(sim, 3)} (threshold {_fmt(reg.get('ncc_threshold'), 2)}), "
                     f"Mattes MI {_fmt(reg.get('mattes_mi_before'), 3)} -> {_fmt(reg.get('mattes_mi_after'), 3)}, "
                     f"{_fmt(reg.get('seconds'), 1)} s")
    else:
        lines.append("Registration: not run (regions given)")
    src = info.get("slice_source") or {}
    auto = info.get("automatic_slices") or {}
    for name in ("BG", "CSO"):
        z = (info.get("rating_slices") or {}).get(name)
        extra = f", automatic would be {auto.get(name)}" if src.get(name) == "manual" and auto.get(name) is not None else ""
        lines.append(f"{name} rating slice: {_fmt(z)} ({src.get(name, 'given')}{extra})")
    if info.get("ventricle_top_slice") is not None:
        lines.append(f"Top of the lateral ventricles: slice {info['ventricle_top_slice']}")
    return lines


def build_subject_report(out_dir: Path, name: str, image: np.ndarray, mask: np.ndarray,
                         spacing_zyx: tuple[float, float, float], census: CensusResult, ratings: list[dict],
                         rating_info: dict, regions: dict, meta: dict | None = None, superior_up: bool = True) -> Path:
    """Writes one subject's report folder (SUBJECT_FILES); returns the path of report.html.

    rating_info: {"rating_slices": {BG, CSO}, "slice_source", "automatic_slices", "ventricle_top_slice",
    "registration"} (RatingSliceResult.summary()); meta: extra "key: value" lines (input file, model)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = meta or {}
    slices = rating_info.get("rating_slices") or {}
    f1 = fig_rating_slices(image, mask, slices, regions, ratings, spacing_zyx, rating_info.get("slice_source"))
    f2 = fig_pvs_projection(image, mask, spacing_zyx, superior_up)
    f1.savefig(out_dir / "rating_slices.png", dpi=110)
    f2.savefig(out_dir / "pvs_projection.png", dpi=110)
    census.table.to_csv(out_dir / "census.csv", index=False, float_format="%.6g")
    s = census.stats
    rating_rows = [[r["region"], r["convention"], r["slice"], r["hemisphere"], r["count"],
                    None if r["category"] is None else f"{r['category']} ({CATEGORY_LABELS[r['category']]})"]
                   for r in ratings]
    region_rows = [[reg, s[f"n_{reg}"], s[f"volume_mm3_{reg}"]] for reg in REGION_NAMES]
    region_rows += [[f"hemisphere {h}", s[f"n_{h}"], s[f"volume_mm3_{h}"]] for h in ("left", "right", "outside")
                    if s[f"n_{h}"] or h != "outside"]
    qc = qc_lines(rating_info)
    summary = {"name": name, **meta, "census": s, "ratings": ratings, "rating_info": rating_info, "qc": qc}
    write_json_atomic(summary, out_dir / "summary.json", default=_json_default)
    conv = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in CONVENTIONS.items())
    meta_html = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in meta.items())
    body = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>PVS report: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:2px 8px;text-align:right}}th{{background:#eee}}img{{max-width:100%}}</style>
</head><body><h1>PVS burden report: {html.escape(name)}</h1><ul>{meta_html}</ul>
<h2>Visual-rating categories (0 none, 1: 1-10, 2: 11-20, 3: 21-40, 4: &gt;40 PVS; Potter et al. 2015)</h2>
{_table(["region", "convention", "slice", "hemisphere", "count", "category"], rating_rows)}
<p>Conventions:</p><ul>{conv}</ul>
<p>A count is the number of 2D 8-connected PVS components inside the rating region on that slice.</p>
<img src="rating_slices.png" alt="rating slices">
<h2>Census (3D PVS components)</h2>
<p>{s['n_pvs']} PVS, total volume {_fmt(s['total_volume_mm3'])} mm&sup3;, median length {_fmt(s['median_length_mm'])} mm,
median maximal width {_fmt(s['median_width_mm'])} mm. One row per PVS: <a href="census.csv">census.csv</a>.</p>
{_table(["where", "PVS", "volume (mm³)"], region_rows)}
<img src="pvs_projection.png" alt="PVS projection">
<h2>Quality control</h2><ul>{''.join(f'<li>{html.escape(q)}</li>' for q in qc)}</ul>
</body></html>
"""
    (out_dir / "report.html").write_text(body, encoding="utf-8")  # GDCM (DICOM input) can switch the default to ASCII
    with PdfPages(out_dir / "report.pdf", metadata={"CreationDate": None, "ModDate": None}) as pdf:
        txt = plt.figure(figsize=(8.27, 11.69))
        lines = [f"PVS burden report: {name}", ""] + [f"{k}: {v}" for k, v in meta.items()] + [""]
        lines += [f"{r[0]} [{r[1]}]: slice {_fmt(r[2])}, {r[3] or '-'}, count {_fmt(r[4])}, category {_fmt(r[5])}"
                  for r in rating_rows]
        lines += ["", f"Census: {s['n_pvs']} PVS, {_fmt(s['total_volume_mm3'])} mm^3"]
        lines += [f"  {r[0]}: {r[1]} PVS, {_fmt(r[2])} mm^3" for r in region_rows] + ["", "QC:"] + [f"  {q}" for q in qc]
        txt.text(0.05, 0.97, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7, wrap=True)
        for f in (txt, f1, f2):
            pdf.savefig(f)
    for f in (f1, f2):
        plt.close(f)
    plt.close("all")
    return out_dir / "report.html"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_batch(out_dir: Path, subjects: list[dict]) -> list[Path]:
    """Cohort files in out_dir: census.csv (all PVS, first column `subject`), stats.csv (one row per subject:
    census totals, rating counts and categories per convention, slices, QC) and index.html.

    subjects: [{"name", "report" (path relative to out_dir), "census": CensusResult, "ratings", "rating_info",
    "meta"}]."""
    out_dir = Path(out_dir)
    tables = [sub["census"].table.assign(subject=sub["name"]) for sub in subjects]
    census = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(census.columns):
        census = census[["subject"] + [c for c in census.columns if c != "subject"]]
    census.to_csv(out_dir / "census.csv", index=False, float_format="%.6g")
    rows = []
    for sub in subjects:
        info = sub.get("rating_info") or {}
        reg = info.get("registration") or {}
        rows.append({"subject": sub["name"], **{k: v for k, v in (sub.get("meta") or {}).items()},
                     **sub["census"].stats, **rating_columns(sub["ratings"]),
                     "BG_slice_source": (info.get("slice_source") or {}).get("BG"),
                     "CSO_slice_source": (info.get("slice_source") or {}).get("CSO"),
                     "registration_ok": reg.get("ok"), "registration_ncc": reg.get("ncc_after")})
    stats = pd.DataFrame(rows)
    stats.to_csv(out_dir / "stats.csv", index=False, float_format="%.6g")
    head = ["subject", "PVS", "volume (mm³)", "BG count / category", "CSO count / category", "slices", "registration"]
    trs = []
    for sub, row in zip(subjects, rows):
        link = f'<a href="{quote(str(sub["report"]))}">{html.escape(sub["name"])}</a>'
        cells = [link, html.escape(str(row["n_pvs"])), html.escape(_fmt(row["total_volume_mm3"]))]
        for reg_name in ("BG", "CSO"):
            cells.append(html.escape(f"{_fmt(row.get(reg_name + '_protocol_count'))} / "
                                     f"{_fmt(row.get(reg_name + '_protocol_category'))}"))
        cells.append(html.escape(f"BG {row['BG_slice_source'] or '-'}, CSO {row['CSO_slice_source'] or '-'}"))
        cells.append(html.escape("-" if row["registration_ok"] is None else
                                 f"{'OK' if row['registration_ok'] else 'FAILED'} (NCC {_fmt(row['registration_ncc'], 3)})"))
        trs.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    (out_dir / "index.html").write_text(
        f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>PVS burden: cohort</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:2px 8px}}th{{background:#eee}}</style></head><body>
<h1>PVS burden: {len(subjects)} scans</h1>
<p>Counts and categories: {html.escape(CONVENTIONS['protocol_slice_both_hemispheres'])}; the other convention
({html.escape(CONVENTIONS['max_slice_one_hemisphere'])}) is in <a href="stats.csv">stats.csv</a>
(<code>*_maxslice_*</code> columns). All PVS: <a href="census.csv">census.csv</a>.</p>
<table><tr>{th}</tr>{''.join(trs)}</table></body></html>
""", encoding="utf-8")
    return [out_dir / "census.csv", out_dir / "stats.csv", out_dir / "index.html"]
