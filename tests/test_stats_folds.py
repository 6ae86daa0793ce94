"""Fold-level paired statistics (evaluation/fold_stats.py) against small examples computed by hand.

Every expected number here is written out (with the arithmetic in a comment), not recomputed with the library
call under test; case order differs between methods, so pairing by position instead of by case fails.
"""
import math
import re

import numpy as np
import pandas as pd
import pytest

from nnunetv2_mfns.evaluation.fold_stats import (fold_level_tests, fold_stats_markdown, holm_adjust, sign_flip_test,
                                                 t_test_units)


def test_holm_on_a_known_p_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not a member of the family (m = 2): 0.01 x 2, 0.04 x 1 -> max(0.02, 0.04)
    out = holm_adjust([0.01, np.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1, capped; 0.6 inherits the max
    assert holm_adjust([]).size == 0


def test_t_test_on_three_hand_computed_differences():
    # d = 0.01, 0.02, 0.03: mean 0.02, SD 0.01, SE 0.01/sqrt(3), t = 2 sqrt(3) = 3.4641, df 2.
    # t with 2 df has the closed form P(|T| > t) = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14) = 0.0741799;
    # its 97.5% quantile is 0.95 / sqrt(2 * 0.975 * 0.025) = 4.302653, so the CI is 0.02 -/+ 4.302653 * 0.0057735.
    r = t_test_units([0.01, 0.02, 0.03])
    assert r["t_stat"] == pytest.approx(3.4641016, rel=1e-6) and r["t_df"] == 2
    assert r["p_t"] == pytest.approx(0.0741799, rel=1e-5)
    assert r["t_ci_low"] == pytest.approx(-0.0048414, abs=1e-6) and r["t_ci_high"] == pytest.approx(0.0448414, abs=1e-6)
    assert math.isnan(t_test_units([0.01])["p_t"]) and math.isnan(t_test_units([0.02, 0.02])["p_t"])


def test_sign_flip_exact_p_by_enumeration():
    # all three positive: only all-plus and all-minus reach |mean| 0.02 -> 2 / 8
    assert sign_flip_test([0.01, 0.02, 0.03]) == pytest.approx((0.25, 0.25))
    # 3 - 1 + 2 = 4 (x 0.01); the 8 signed sums of (3, 1, 2) are +-6, +-4, +-2, 0, 0 -> |s| >= 4 in 4 of 8
    assert sign_flip_test([0.03, -0.01, 0.02])[0] == pytest.approx(0.5)
    assert sign_flip_test([0.1] * 5) == pytest.approx((0.0625, 0.0625))  # 2 / 32: the floor with 5 folds


def fold_metrics(shuffle_seed: int = 0) -> pd.DataFrame:
    """Reference R on 3 folds x 2 cases; method M on the same 6 cases with per-fold mean differences
    0.01 / 0.02 / 0.03; method S (fold 0 and 1 only). Each method's rows are in a different order."""
    ref = {"c1": (0, 0.70), "c2": (0, 0.80), "c3": (1, 0.60), "c4": (1, 0.90), "c5": (2, 0.50), "c6": (2, 0.75)}
    # M - R per case: fold 0: +0.00, +0.02 (mean 0.01); fold 1: +0.03, +0.01 (0.02); fold 2: +0.05, +0.01 (0.03)
    diff_m = {"c1": 0.00, "c2": 0.02, "c3": 0.03, "c4": 0.01, "c5": 0.05, "c6": 0.01}
    # S - R: fold 0: -0.04, -0.02 (-0.03); fold 1: -0.01, -0.03 (-0.02)
    diff_s = {"c1": -0.04, "c2": -0.02, "c3": -0.01, "c4": -0.03}
    rows = [(c, "R", f, "dsc", v) for c, (f, v) in ref.items()]
    rows += [(c, "M", ref[c][0], "dsc", ref[c][1] + d) for c, d in diff_m.items()]
    rows += [(c, "S", ref[c][0], "dsc", ref[c][1] + d) for c, d in diff_s.items()]
    df = pd.DataFrame(rows, columns=["case", "method", "fold", "metric", "value"])
    rng = np.random.default_rng(shuffle_seed)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)   # positional pairing is now meaningless
    df.attrs["methods"] = ["R", "M", "S"]
    return df


def test_fold_level_tests_pair_by_case_and_give_same_subject_reference_means():
    df = fold_metrics()
    # the order of M's cases differs from R's, so a positional pairing would see other differences
    assert list(df.loc[df["method"] == "M", "case"]) != list(df.loc[df["method"] == "R", "case"])
    t = fold_level_tests(df, "R", metric_names=("dsc",), n_boot=2000, seed=1).set_index("method")
    m = t.loc["M"]
    assert (m["n"], m["n_units"], m["unit"]) == (6, 3, "fold")
    assert m["unit_diffs"] == "f0 +0.010; f1 +0.020; f2 +0.030"
    assert m["mean_diff"] == pytest.approx(0.02) and m["unit_mean_diff"] == pytest.approx(0.02)
    assert m["p_t"] == pytest.approx(0.0741799, rel=1e-5) and m["t_df"] == 2    # as in the 3-difference example
    assert m["p_signflip"] == pytest.approx(0.25)
    # R's mean on all 6 cases = (0.70 + 0.80 + 0.60 + 0.90 + 0.50 + 0.75) / 6 = 0.70833; M = that + 0.02
    assert m["mean_reference"] == pytest.approx(0.708333, abs=1e-6) and m["mean_method"] == pytest.approx(0.728333, abs=1e-6)
    s = t.loc["S"]
    # S has folds 0-1 only: the reference mean beside it is on those 4 cases, (0.70 + 0.80 + 0.60 + 0.90) / 4
    assert s["mean_reference"] == pytest.approx(0.75) and s["n"] == 4 and s["n_units"] == 2
    assert s["unit_diffs"] == "f0 -0.030; f1 -0.020"
    # d = -0.03, -0.02: mean -0.025, SD 0.0070711, SE 0.005, t = -5, df 1: p = 1 - (2/pi) atan(5) = 0.1256659
    assert s["t_stat"] == pytest.approx(-5.0) and s["p_t"] == pytest.approx(0.1256659, rel=1e-5)
    # Holm over the 2 rows: 0.0741799 x 2 = 0.1483598, then max(0.1483598, 0.1256659 x 1)
    assert m["p_holm"] == pytest.approx(0.1483598, rel=1e-5) and s["p_holm"] == pytest.approx(0.1483598, rel=1e-5)
    assert not m["significant"] and not s["significant"]
    assert math.isnan(s["boot_ci_low"]) and "sign-flip p cannot be below 0.5 with 2 units" in s["note"]
    assert "| S | DSC | 4 / 2 | 0.725 | 0.750 | -0.025 | f0 -0.030; f1 -0.020 | 0.126 (df 1) | 0.148 |" in \
        fold_stats_markdown(t.reset_index()) and "not given (2 < 5 units)" in fold_stats_markdown(t.reset_index())
    # independent of row order: another shuffle gives the same table
    t2 = fold_level_tests(fold_metrics(7), "R", metric_names=("dsc",), n_boot=2000, seed=1).set_index("method")
    assert t2.loc["M", "p_t"] == pytest.approx(m["p_t"]) and t2.loc["S", "unit_diffs"] == s["unit_diffs"]


def test_fold_x_seed_units_and_bold_only_after_holm():
    # 3 folds x 2 seeds, one case per fold, difference 0.05 + 0.001 * unit index: 6 units, all positive
    rows = []
    for f in range(3):
        for s in (1, 2):
            rows.append((f"c{f}", "R", f, s, "dsc", 0.7))
            rows.append((f"c{f}", "M", f, s, "dsc", 0.75 + 0.001 * (2 * f + s)))
    df = pd.DataFrame(rows, columns=["case", "method", "fold", "seed", "metric", "value"]).iloc[::-1]
    t = fold_level_tests(df, "R", metric_names=("dsc",), n_boot=1000, seed=0)
    r = t.iloc[0]
    assert (r["unit"], r["n_units"], r["n"]) == ("fold x seed", 6, 6)
    assert r["unit_diffs"].startswith("f0s1 +0.051; f0s2 +0.052; f1s1 +0.053")
    assert r["p_signflip"] == pytest.approx(2 / 64)        # all positive: 2 of 2^6 patterns
    assert r["significant"] and r["boot_ci_low"] > 0        # t = 0.0535 / (0.0018708 / sqrt 6) = 70: p << 0.05
    md = fold_stats_markdown(t)
    assert re.search(r"\*\*\+0\.05\d\*\*", md) and "fold x seeds" in md
    # the same evidence in a family of 40 comparisons whose other p are 1: Holm multiplies the smallest by 40
    assert holm_adjust([r["p_t"]] + [1.0] * 39)[0] == pytest.approx(min(1.0, 40 * r["p_t"]))


def test_no_fold_column_and_degenerate_rows_are_notes_not_errors():
    df = pd.DataFrame([("c1", "R", None, "dsc", 0.5), ("c2", "R", None, "dsc", 0.6),
                       ("c1", "M", None, "dsc", 0.5), ("c2", "M", None, "dsc", 0.6)],
                      columns=["case", "method", "fold", "metric", "value"])
    df["fold"] = df["fold"].astype("Int64")  # as evaluate_folders writes it without --splits: NA, not NaN
    r = fold_level_tests(df, "R", metric_names=("dsc",), n_boot=100).iloc[0]
    assert r["n"] == 2 and r["n_units"] == 1 and math.isnan(r["p_t"]) and math.isnan(r["p_holm"])
    assert "no --splits" in r["note"] and "no fold-level test" in r["note"]
    assert fold_level_tests(df, "absent", metric_names=("dsc",)).empty


def test_study_budget_is_named_an_annealed_500_iteration_budget_wherever_it_is_described():
    from nnunetv2_mfns.budget_table import BUDGETS
    from nnunetv2_mfns.evaluation.budget import budget_note
    from nnunetv2_mfns.orchestration.provenance import budget_description
    b = BUDGETS["study"]
    assert b.epochs * b.iterations == 500 and b.description.startswith("annealed 500-iteration budget")
    assert "annealed 500-iteration budget" in budget_description("study")
    note = budget_note(["study", "demo"])
    assert "annealed 500-iteration budget" in note and "not that the method converged" in note
    assert "annealed" not in budget_note(["full"])    # only a report made with that budget says it
    assert "Budget `long` is an annealed 2000-iteration budget" in budget_note(["long"])
