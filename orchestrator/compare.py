"""Compare two campaigns (or two node types of one): ratios B/A per test, phase and metric.

For every (test, sub-test, phase) present on both sides and every metric:
the ratio of means B/A with a 95 % CI (delta method on the log ratio,
Welch-Satterthwaite degrees of freedom), and Welch's unequal-variance
t-test on the two means. Rows are sorted by effect size (|log ratio|),
largest first. Both sides' energy source labels travel with every row,
and a note says when the two sides are not like for like (batch, input,
historical data with CPU+DRAM only).
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats as st

from orchestrator.errors import UserError
from orchestrator.results import METRICS, CampaignData

DEFAULT_METRICS = ("duration_s", "throughput", "energy_j", "energy_per_sample_j")
BASE_KEYS = ["test", "subtest", "phase"]
CONFIG_KEYS = ["backend", "precision", "execution", "batch_size", "input_shape"]
ALPHA = 0.05


def ratio_ci(mean_a, sd_a, n_a, mean_b, sd_b, n_b, level: float = 0.95) -> tuple:
    """(ratio B/A, low, high, df): delta method on log(B/A) with Welch-Satterthwaite df."""
    if not (mean_a and mean_b) or mean_a <= 0 or mean_b <= 0 or any(map(_nan, (mean_a, mean_b))):
        return math.nan, math.nan, math.nan, math.nan
    ratio = mean_b / mean_a
    if n_a < 2 or n_b < 2 or _nan(sd_a) or _nan(sd_b):
        return ratio, math.nan, math.nan, math.nan
    rel_a = (sd_a / mean_a) ** 2 / n_a
    rel_b = (sd_b / mean_b) ** 2 / n_b
    var = rel_a + rel_b
    if var == 0:
        return ratio, ratio, ratio, math.inf
    df = var ** 2 / (rel_a ** 2 / (n_a - 1) + rel_b ** 2 / (n_b - 1))
    half = st.t.ppf(0.5 + level / 2, df) * math.sqrt(var)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half), df


def welch(mean_a, sd_a, n_a, mean_b, sd_b, n_b) -> tuple:
    """(t, p) of Welch's t-test from summary statistics; NaN when a side has fewer than 2 values."""
    if n_a < 2 or n_b < 2 or any(map(_nan, (mean_a, sd_a, mean_b, sd_b))):
        return math.nan, math.nan
    if sd_a == 0 and sd_b == 0:
        return (math.nan, math.nan) if mean_a == mean_b else (math.copysign(math.inf, mean_b - mean_a), 0.0)
    result = st.ttest_ind_from_stats(mean_b, sd_b, n_b, mean_a, sd_a, n_a, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _match_keys(a: pd.DataFrame, b: pd.DataFrame) -> list:
    keys = list(BASE_KEYS)
    if a.duplicated(BASE_KEYS).any() or b.duplicated(BASE_KEYS).any():
        keys += [k for k in CONFIG_KEYS if a[k].notna().all() and b[k].notna().all()]
    return keys


def compare(a: CampaignData, b: CampaignData, metrics=DEFAULT_METRICS, alpha: float = ALPHA) -> pd.DataFrame:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(METRICS)}")
    keys = _match_keys(a.stats, b.stats)
    merged = a.stats.merge(b.stats, on=keys, suffixes=("_a", "_b"))
    if merged.empty:
        raise UserError(f"{a.name} and {b.name} have no (test, sub-test, phase) in common")
    rows = []
    for rec in merged.to_dict("records"):
        notes = []
        for key in CONFIG_KEYS:
            if key not in keys and str(rec.get(f"{key}_a")) != str(rec.get(f"{key}_b")):
                notes.append(f"{key} {rec.get(f'{key}_a')} vs {rec.get(f'{key}_b')}")
        if "historical" in (rec.get("energy_kind_a"), rec.get("energy_kind_b")):
            notes.append("historical side: CPU+DRAM energy only, PUE divided out of its published values")
        for metric in metrics:
            values = [rec.get(f"{metric}_{part}_{side}") for side in "ab" for part in ("mean", "std", "n")]
            mean_a, sd_a, n_a, mean_b, sd_b, n_b = values
            n_a, n_b = int(n_a or 0), int(n_b or 0)
            if _nan(mean_a) or _nan(mean_b):
                continue
            ratio, low, high, df = ratio_ci(mean_a, sd_a, n_a, mean_b, sd_b, n_b)
            t, p = welch(mean_a, sd_a, n_a, mean_b, sd_b, n_b)
            label, unit, higher_better = METRICS[metric]
            if _nan(p):
                verdict = "n too small" if min(n_a, n_b) < 2 else "no difference"
            elif p >= alpha:
                verdict = "not significant"
            else:
                verdict = "better" if (ratio > 1) == higher_better else "worse"
            rows.append({
                "test": rec["test"], "title": rec.get("title_a"), "subtest": rec["subtest"], "phase": rec["phase"],
                "metric": metric, "unit": unit, "node_type_a": rec.get("node_type_a"),
                "node_type_b": rec.get("node_type_b"), "mean_a": mean_a, "mean_b": mean_b, "n_a": n_a, "n_b": n_b,
                "ratio": ratio, "ratio_ci95_low": low, "ratio_ci95_high": high, "welch_t": t, "welch_df": df,
                "p_value": p, "significant": bool(not _nan(p) and p < alpha), "verdict": verdict,
                "effect": abs(math.log(ratio)) if ratio and ratio > 0 else math.nan,
                "energy_source_a": rec.get("energy_label_a") if metric.startswith(("energy", "samples", "wh", "power"))
                else "", "energy_source_b": rec.get("energy_label_b") if metric.startswith(
                    ("energy", "samples", "wh", "power")) else "",
                "notes": "; ".join(notes),
            })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values(["effect", "test", "phase"], ascending=[False, True, True],
                           na_position="last").reset_index(drop=True)


def to_markdown(table: pd.DataFrame, a_name: str, b_name: str) -> str:
    from orchestrator.tables import fmt

    lines = [f"**Comparison: B = {b_name} vs A = {a_name}** (ratio B/A, 95 % CI, Welch's t-test)", "",
             "| test | sub-test | phase | metric | A | B | B/A | 95 % CI | p | verdict | notes |",
             "|---|---|---|---|--:|--:|--:|---|--:|---|---|"]
    for r in table.to_dict("records"):
        ci = "–" if _nan(r["ratio_ci95_low"]) else f"[{fmt(r['ratio_ci95_low'])}, {fmt(r['ratio_ci95_high'])}]"
        p = "–" if _nan(r["p_value"]) else f"{r['p_value']:.2g}"
        lines.append(f"| {r['title']} | {r['subtest']} | {r['phase']} | {r['metric']} ({r['unit']}) | "
                     f"{fmt(r['mean_a'])} | {fmt(r['mean_b'])} | {fmt(r['ratio'])} | {ci} | {p} | {r['verdict']} | "
                     f"{r['notes']} |")
    sources = sorted({s for col in ("energy_source_a", "energy_source_b") for s in table.get(col, []) if s})
    if sources:
        lines += ["", "Energy sources: " + " | ".join(sources)]
    return "\n".join(lines) + "\n"
