"""PVS counts on the rating slices (BG, CSO), as raters count them, and their agreement statistics.

A count is the number of 2D connected components of the binary mask inside the region mask on the rating
slice:
    * rating slice: `subjects.json` -> `rating_slices[region]`, the 0-based index along numpy axis 0 of the
      SimpleITK array (ITK index axis 2, the axial slice axis), or given explicitly per subject;
    * region: `region_masks[region]` (path relative to the dataset folder, same geometry as the case), else
      the whole slice;
    * components: in-plane connectivity 8 by default (4 as option), computed on mask AND region, so a PVS
      cut by the region border counts once per piece inside; components smaller than `min_size` pixels are
      dropped (default 1 = keep all, the definition of `true_counts` in docs/interfaces.md);
    * hemispheres: the left-right axis is numpy axis 2 (ITK index axis 0, x). The midline column is the
      centre of the region's extent along that axis on the rating slice (the whole slice's centre when
      there is no region mask). A component belongs to the side of its centroid column; a centroid exactly
      on the midline goes to the low-index side. Side names follow the ITK LPS convention: with an identity
      direction, x index increases toward the patient's left, so the high-index side is "left"; a negative
      x direction cosine swaps them.
Agreement between two count sources (model vs each rater, rater vs rater, model vs truth): Spearman rank
correlation (scipy.stats.spearmanr) and Bland-Altman bias = mean(x - y) with 95% limits of agreement
bias +/- 1.96 SD(x - y) (ddof 1). With n < 3 paired subjects, or a constant series, the statistic is NaN
and the `note` column says why. Spearman only says whether the ranking agrees; two more columns say whether
the counts themselves agree:
    * ICC(2,1) (`icc_2_1`): two-way random effects, absolute agreement, single measurement (Shrout & Fleiss
      1979, McGraw & Wong 1996 "ICC(A,1)"), from the two-way ANOVA mean squares of the n x 2 table (`icc_2_1`
      below): a method that counts twice as many PVS as the rater but in the same order has Spearman 1 and a
      low ICC. NaN for n < 3 or when there is no variance at all;
    * relative count error (`rel_error`): mean over subjects with y > 0 of (x - y) / y (signed: > 0 means x
      counts more), and `rel_abs_error`, the mean of |x - y| / y.
"""
from __future__ import annotations

import logging
import math
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from nnunetv2_mfns.errors import MfnsInputError

from .io import (FILE_ENDING, describe_geometry_difference, prediction_files, read_binary_mask, read_region_mask,
                 same_geometry)

logger = logging.getLogger(__name__)

REGIONS = ("BG", "CSO")
COUNT_COLUMNS = ["case", "source", "kind", "region", "side", "count"]


def structure_2d(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise MfnsInputError(f"connectivity: expected 4 or 8 for 2D counts, got {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def count_slice(mask2d: np.ndarray, region2d: np.ndarray | None = None, connectivity: int = 8, min_size: int = 1,
                high_index_is_left: bool = True) -> dict[str, int]:
    """Counts the components of mask2d inside region2d, in total and per hemisphere (see module docstring)."""
    if min_size < 1:
        raise MfnsInputError(f"min_size: must be >= 1, got {min_size}")
    m = np.asarray(mask2d).astype(bool)
    if region2d is not None:
        region2d = np.asarray(region2d).astype(bool)
        if region2d.shape != m.shape:
            raise MfnsInputError(f"region mask slice shape {region2d.shape} != mask slice shape {m.shape}")
        m = m & region2d
        cols = np.nonzero(region2d.any(axis=0))[0]
        midline = (cols.min() + cols.max()) / 2.0 if cols.size else (m.shape[1] - 1) / 2.0
    else:
        midline = (m.shape[1] - 1) / 2.0
    lab, n = ndimage.label(m, structure=structure_2d(connectivity))
    if n == 0:
        return {"total": 0, "left": 0, "right": 0}
    flat = lab.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    col_sum = np.bincount(flat, weights=np.broadcast_to(np.arange(m.shape[1]), m.shape).ravel(), minlength=n + 1)[1:]
    keep = sizes >= min_size
    high = (col_sum / np.maximum(sizes, 1)) > midline
    n_high, n_low = int(np.count_nonzero(keep & high)), int(np.count_nonzero(keep & ~high))
    left, right = (n_high, n_low) if high_index_is_left else (n_low, n_high)
    return {"total": int(np.count_nonzero(keep)), "left": left, "right": right}


def count_rating_slices(mask: np.ndarray, subject: dict, dataset_dir: Path, connectivity: int = 8, min_size: int = 1,
                        rating_slices: dict[str, int] | None = None, direction: tuple[float, ...] | None = None,
                        region_arrays: dict[str, np.ndarray] | None = None, case: str = "subject") -> dict:
    """Counts PVS on each rating slice of one subject.

    mask: 3D binary array (numpy axis order of SimpleITK, z, y, x). subject: the subjects.json entry.
    rating_slices overrides subject["rating_slices"]; region_arrays supplies already loaded region masks
    (otherwise they are read from dataset_dir / subject["region_masks"][region]). direction: the image's
    9-value ITK direction, used only to name the hemispheres (identity assumed when None).
    Returns {region: {"slice": index, "region_mask": path or None, "total": n, "left": n, "right": n}}.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise MfnsInputError(f"{case}: mask must be 3D, got {mask.ndim}D")
    rs = rating_slices if rating_slices is not None else (subject.get("rating_slices") or {})
    if not rs:
        raise MfnsInputError(f"{case}: no rating_slices in subjects.json and none given")
    high_is_left = True if direction is None else bool(direction[0] >= 0)
    region_paths = subject.get("region_masks") or {}
    out = {}
    for region, idx in rs.items():
        if idx is None:
            continue
        if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool) or not 0 <= idx < mask.shape[0]:
            raise MfnsInputError(f"{case}: rating_slices[{region!r}] = {idx!r} is not a slice index in 0..{mask.shape[0] - 1}")
        region_arr, rel = None, region_paths.get(region)
        if region_arrays is not None and region in region_arrays:
            region_arr = region_arrays[region]
        elif rel:
            region_arr, _ = read_region_mask(Path(dataset_dir) / rel, role=f"region mask {region}")
        if region_arr is not None and region_arr.shape != mask.shape:
            raise MfnsInputError(f"{Path(dataset_dir) / rel if rel else case}: region mask {region} shape "
                                 f"{region_arr.shape} != mask shape {mask.shape}")
        c = count_slice(mask[idx], None if region_arr is None else region_arr[idx], connectivity, min_size, high_is_left)
        out[region] = {"slice": int(idx), "region_mask": rel if region_arr is not None else None, **c}
    return out


def _load_regions(subject: dict, dataset_dir: Path, geom) -> dict[str, np.ndarray]:
    arrays = {}
    for region, rel in (subject.get("region_masks") or {}).items():
        if not rel:
            continue
        p = Path(dataset_dir) / rel
        arr, g = read_region_mask(p, role=f"region mask {region}")
        if geom is not None and not same_geometry(g, geom):
            raise MfnsInputError(f"{p}: region mask geometry differs from the case ({describe_geometry_difference(g, geom)})")
        arrays[region] = arr
    return arrays


def count_folders(subjects: dict, dataset_dir: Path, pred_dirs: dict[str, Path | list[Path]], gt_dir: Path | None = None,
                  connectivity: int = 8, min_size: int = 1, allow_missing: bool = False,
                  cases: list[str] | None = None, rating_slices: dict[str, dict[str, int]] | None = None,
                  auto_slices: bool = False) -> pd.DataFrame:
    """Rating-slice counts of the truth (if gt_dir), each method and each rater, as a tidy DataFrame.

    Columns: case, source (truth / method name / rater name), kind (truth, method, rater), region, side
    (total, left, right; raters only have total), count. Only subjects with rating_slices are counted;
    `cases` restricts them further. rating_slices ({case: {region: index}}) replaces subjects.json's indices for
    the cases it names. A missing prediction file is an error unless allow_missing. auto_slices: a subject without
    rating slices gets automatic ones and automatic BG/CSO regions (`rating_slices.automatic_slices_for_case`,
    from its T2w scan; region masks given in subjects.json still win); without a scan it is skipped with a warning.
    """
    structure_2d(connectivity)
    rating_slices = rating_slices or {}
    unknown = sorted(set(rating_slices) - set(subjects["subjects"]))
    if unknown:
        raise MfnsInputError(f"rating slices: case {unknown[0]!r} is not in subjects.json")
    pred_files = prediction_files(pred_dirs)
    rows = []
    for case, subj in sorted(subjects["subjects"].items()):
        if cases is not None and case not in cases:
            continue
        if case in rating_slices:
            subj = {**subj, "rating_slices": rating_slices[case]}
        auto_regions = {}
        if not subj.get("rating_slices") and auto_slices:
            from .rating_slices import automatic_slices_for_case  # lazy: pulls in the registration stack
            found = automatic_slices_for_case(case, subj, dataset_dir)
            if found is not None:
                subj, auto_regions = {**subj, "rating_slices": found[0]}, found[1]
        if not subj.get("rating_slices"):
            continue
        files = {}
        if gt_dir is not None and (Path(gt_dir) / (case + FILE_ENDING)).is_file():
            files[("truth", "truth")] = Path(gt_dir) / (case + FILE_ENDING)
        for m, d in pred_dirs.items():
            if case in pred_files[m]:
                files[(m, "method")] = pred_files[m][case]
            elif not allow_missing:
                d0 = d[0] if isinstance(d, (list, tuple)) else d
                raise MfnsInputError(f"{Path(d0) / (case + FILE_ENDING)}: prediction of method {m!r} for rated case "
                                     f"{case} is missing (use --allow-missing to skip it)")
        regions, geom0 = None, None
        for (source, kind), p in files.items():
            arr, geom = read_binary_mask(p, role="label" if kind == "truth" else "prediction")
            if geom0 is None:
                geom0 = geom
                regions = {**auto_regions, **_load_regions(subj, dataset_dir, geom)}
            elif not same_geometry(geom, geom0):
                raise MfnsInputError(f"{p}: geometry differs from the other masks of case {case} "
                                     f"({describe_geometry_difference(geom, geom0)})")
            res = count_rating_slices(arr, subj, dataset_dir, connectivity, min_size, direction=geom.direction,
                                      region_arrays=regions, case=str(p))
            tc = subj.get("true_counts") or {}
            for region, r in res.items():
                # phantoms store the truth's count made with the default rule: a mismatch means the label or
                # the region mask is not the one the count was made from
                if (kind == "truth" and connectivity == 8 and min_size == 1 and tc.get(region) is not None
                        and region not in auto_regions and tc[region] != r["total"]):
                    logger.warning("%s: truth count %s on %s slice %d differs from true_counts %s in subjects.json",
                                   case, r["total"], region, r["slice"], tc[region])
                for side in ("total", "left", "right"):
                    rows.append((case, source, kind, region, side, r[side]))
        for rater, rc in (subj.get("rater_counts") or {}).items():
            for region, v in rc.items():
                if v is None:
                    continue
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or v != v:
                    raise MfnsInputError(f"subjects.json: subjects[{case!r}].rater_counts[{rater!r}][{region!r}] = {v!r} "
                                         f"is not a non-negative count")
                rows.append((case, rater, "rater", region, "total", v))
    df = pd.DataFrame(rows, columns=COUNT_COLUMNS)
    df["count"] = df["count"].astype(float)
    return df


def icc_2_1(table: np.ndarray) -> float:
    """ICC(2,1) of an n subjects x k raters table: two-way random effects, absolute agreement, single rater.

    ICC(2,1) = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n), with the mean squares of the two-way
    ANOVA without replication: rows (subjects) MSR = k sum (row mean - grand mean)^2 / (n - 1), columns
    (raters) MSC = n sum (column mean - grand mean)^2 / (k - 1), residual MSE = SSE / ((n - 1)(k - 1)).
    NaN for n < 3, k < 2, missing values, or a table without variance."""
    t = np.asarray(table, float)
    if t.ndim != 2 or t.shape[0] < 3 or t.shape[1] < 2 or not np.all(np.isfinite(t)):
        return math.nan
    n, k = t.shape
    grand = t.mean()
    ss_rows = k * float(((t.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((t.mean(axis=0) - grand) ** 2).sum())
    ss_err = float(((t - grand) ** 2).sum()) - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / den) if den > 0 else math.nan


def agreement(x: np.ndarray, y: np.ndarray) -> dict:
    """Spearman rs/p, Bland-Altman bias/limits, ICC(2,1) and relative count error of paired counts x, y
    (diff = x - y; y is the reference of the relative error)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    res = {"n": n, "spearman_rs": math.nan, "spearman_p": math.nan, "bias": math.nan, "sd_diff": math.nan,
           "loa_low": math.nan, "loa_high": math.nan, "mean_x": math.nan, "mean_y": math.nan, "note": "",
           "icc_2_1": icc_2_1(np.stack([x, y], axis=1)) if n else math.nan, "rel_error": math.nan,
           "rel_abs_error": math.nan}
    pos = y > 0
    if pos.any():
        r = (x[pos] - y[pos]) / y[pos]
        res.update(rel_error=float(r.mean()), rel_abs_error=float(np.abs(r).mean()))
    notes = []
    if n >= 1:
        d = x - y
        res.update(bias=float(d.mean()), mean_x=float(x.mean()), mean_y=float(y.mean()))
        if n >= 2:
            sd = float(d.std(ddof=1))
            res.update(sd_diff=sd, loa_low=res["bias"] - 1.96 * sd, loa_high=res["bias"] + 1.96 * sd)
        else:
            notes.append("n < 2: no limits of agreement")
    if n < 3:
        notes.append(f"n = {n} < 3: Spearman not computed")
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        notes.append("constant counts: Spearman undefined")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.spearmanr(x, y)
        res.update(spearman_rs=float(r.statistic), spearman_p=float(r.pvalue))
    res["note"] = "; ".join(notes)
    return res


def count_correlations(counts: pd.DataFrame) -> pd.DataFrame:
    """Agreement of every pair of count sources per region on total counts.

    Pairs (x vs y): each method vs each rater, rater vs rater, each method vs truth, each rater vs truth.
    Columns: region, x, y, comparison, n, spearman_rs, spearman_p, mean_x, mean_y, bias, sd_diff,
    loa_low, loa_high, note, icc_2_1, rel_error, rel_abs_error.
    """
    cols = ["region", "x", "y", "comparison", "n", "spearman_rs", "spearman_p", "mean_x", "mean_y", "bias",
            "sd_diff", "loa_low", "loa_high", "note", "icc_2_1", "rel_error", "rel_abs_error"]
    tot = counts[counts["side"] == "total"]
    if tot.empty:
        return pd.DataFrame(columns=cols)
    wide = tot.pivot_table(index=["region", "case"], columns="source", values="count", aggfunc="first")
    kinds = tot.drop_duplicates("source").set_index("source")["kind"].to_dict()
    methods = [s for s in dict.fromkeys(tot["source"]) if kinds[s] == "method"]
    raters = sorted(s for s in kinds if kinds[s] == "rater")
    pairs = [(m, r, "model vs rater") for m in methods for r in raters]
    pairs += [(a, b, "rater vs rater") for a, b in combinations(raters, 2)]
    if "truth" in kinds:
        pairs += [(m, "truth", "model vs truth") for m in methods]
        pairs += [(r, "truth", "rater vs truth") for r in raters]
    rows = []
    regions = [r for r in REGIONS if r in wide.index.get_level_values(0)]
    regions += sorted(set(wide.index.get_level_values(0)) - set(REGIONS))
    for region in regions:
        sub = wide.loc[region]
        for x, y, comp in pairs:
            xs = sub[x] if x in sub else pd.Series(dtype=float)
            ys = sub[y] if y in sub else pd.Series(dtype=float)
            both = pd.concat([xs, ys], axis=1).dropna()
            a = agreement(both.iloc[:, 0].to_numpy() if len(both) else [], both.iloc[:, 1].to_numpy() if len(both) else [])
            rows.append({"region": region, "x": x, "y": y, "comparison": comp, **a})
    return pd.DataFrame(rows, columns=cols)


def rater_description(subjects: dict | None) -> str:
    """One sentence on who the raters are: simulated by the phantom (and how) or given in subjects.json."""
    cb = (subjects or {}).get("created_by") or {}
    if cb.get("tool") == "mfns-make-phantom":
        r = (cb.get("args") or {}).get("raters") or {}
        names = ", ".join(r) if isinstance(r, dict) else "rater1, rater2"
        return (f"The raters ({names}) are SIMULATED, not people: `mfns-make-phantom` (phantom/raters.py) reads the "
                "acquired rating slice inside the region like a person scanning for bright dots and lines -- blur at "
                "the rater's reading scale, contrast relative to an 8 mm local-background median, a threshold of "
                "k robust SDs of that contrast with a per-subject jitter and the rater's own perceptual noise, and "
                "only spots between a minimum area and 3 mm wide are counted; parameters in subjects.json "
                "(created_by.args.raters), calibrated on the realistic profile (docs/phantom.md).")
    return "Rater counts are those given in subjects.json (rater_counts)."


def count_agreement_markdown(corr: pd.DataFrame, subjects: dict | None) -> list[str]:
    """Report section: ICC(2,1) and relative count error next to Spearman, and who the raters are."""
    if corr.empty:
        return []

    def f(v, d=3):
        return "NaN" if not np.isfinite(v) else f"{v:.{d}f}"

    lines = ["## Count agreement beyond ranking", "",
             "Spearman only checks the ranking; ICC(2,1) (two-way random, absolute agreement, single measurement; "
             "Shrout & Fleiss 1979) and the relative count error mean((x - y) / y) over subjects with y > 0 (signed: "
             "> 0 means x counts more; |.| = mean absolute) check the counts themselves. "
             + rater_description(subjects), "",
             "| region | x | y | n | Spearman rs | ICC(2,1) | rel. error | abs. rel. error |", "|---|---|---|---|---|---|---|---|"]
    for _, r in corr.iterrows():
        lines.append(f"| {r['region']} | {r['x']} | {r['y']} | {int(r['n'])} | {f(r['spearman_rs'])} | "
                     f"{f(r['icc_2_1'])} | {f(r['rel_error'] * 100, 1)}% | {f(r['rel_abs_error'] * 100, 1)}% |"
                     if np.isfinite(r["rel_error"]) else
                     f"| {r['region']} | {r['x']} | {r['y']} | {int(r['n'])} | {f(r['spearman_rs'])} | "
                     f"{f(r['icc_2_1'])} | NaN | NaN |")
    return lines + [""]
