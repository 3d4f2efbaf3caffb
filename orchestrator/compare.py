"""Compare two campaigns (or two node types of one): comparability first, then ratios B/A.

1. Comparability. Rows are paired by (test, sub-test, phase). Two rows are
   the same workload only when every WORKLOAD_KEYS value agrees (batch,
   input shape, precision, execution, backend); otherwise the verdict is
   `not comparable: <keys>` and no statistic is computed, unless the user
   allows those keys (`--allow-different batch_size ...`). The measurement
   kind (MEASUREMENT_KEYS: window kind, energy source kind, PUE inclusion)
   may differ, but the verdict says so ("worse; meters differ: measured vs
   estimated"), never a notes column only.
2. Settings are not results: with fixed-length windows `duration_s` is the
   window the sweep asked for, and the energy of such a window (`energy_j`,
   `energy_kwh`, `co2_kg`) depends on its length; these rows say
   `setting, not a result` (or `not comparable: window length`).
3. Statistics (orchestrator.intervals): B/A with a 95 % CI and Welch's test,
   both on the log scale, so the CI excludes 1 exactly when p < 0.05; no
   interval or test below 3 repetitions a side. A relative systematic
   uncertainty of the energy source widens each side's interval (quadrature,
   log scale); one side is never called better while those intervals overlap.
   Where only one side's systematic is known, the other's counts as 0 and the
   verdict says it is unknown.

Cells with an invalid energy reading are left out (`--include-invalid` keeps
them); the header says how many. An empty comparison is a UserError (exit 2).
"""
from __future__ import annotations

import math

import pandas as pd

from orchestrator.errors import UserError
from orchestrator.intervals import MIN_N, log_ratio_test, with_systematic
from orchestrator.results import ENERGY_METRICS, METRICS, CampaignData

DEFAULT_METRICS = ("throughput", "energy_per_sample_j", "power_w", "duration_s", "energy_j")
BASE_KEYS = ["test", "subtest", "phase"]
WORKLOAD_KEYS = ["batch_size", "input_shape", "precision", "execution", "backend",
                 "budget_j", "train_fraction"]  # fit cells (#13): another budget or dataset size is other work
MEASUREMENT_KEYS = ["window_kind", "energy_kind", "pue_in_energy"]
WINDOW_ENERGY = {"energy_j", "energy_kwh", "facility_energy_kwh", "co2_kg"}
ALPHA = 0.05


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same(a, b) -> bool:
    if _nan(a) and _nan(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _show(value) -> str:
    if _nan(value):
        return "?"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _pairs(a: pd.DataFrame, b: pd.DataFrame) -> list:
    """(row a, row b) per (test, sub-test, phase); exact workload matches first, else every pairing."""
    pairs = []
    b_groups = {key: group for key, group in b.groupby(BASE_KEYS, dropna=False)}
    for key, group_a in a.groupby(BASE_KEYS, dropna=False):
        group_b = b_groups.get(key)
        if group_b is None:
            continue
        rows_a, rows_b = group_a.to_dict("records"), group_b.to_dict("records")
        exact = [(ra, rb) for ra in rows_a for rb in rows_b
                 if all(_same(ra.get(k), rb.get(k)) for k in WORKLOAD_KEYS)]
        pairs += exact or [(ra, rb) for ra in rows_a for rb in rows_b]
    return pairs


def _verdict_word(p, ratio, higher_better, alpha) -> str:
    if p >= alpha:
        return "not significant"
    return "better" if (ratio > 1) == higher_better else "worse"


def compare(a: CampaignData, b: CampaignData, metrics=DEFAULT_METRICS, alpha: float = ALPHA,
            allow_different=()) -> pd.DataFrame:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(METRICS)}")
    bad_keys = [k for k in allow_different if k not in WORKLOAD_KEYS + MEASUREMENT_KEYS]
    if bad_keys:
        raise UserError(f"--allow-different {' '.join(bad_keys)}: not a workload key; "
                        f"keys: {', '.join(WORKLOAD_KEYS)}")
    for side in (a, b):
        if side.stats.empty or not (side.stats.get("n", side.stats.get("cells_done", pd.Series([0]))) > 0).any():
            raise UserError(f"nothing to compare: {side.label} has no done cell",
                            [f"run `benchmark-tracker status` on it, or collect it again"])
    pairs = _pairs(a.stats, b.stats)
    if not pairs:
        raise UserError(f"nothing to compare: {a.label} and {b.label} have no (test, sub-test, phase) in common")
    rows = []
    for ra, rb in pairs:
        differing = [k for k in WORKLOAD_KEYS if not _same(ra.get(k), rb.get(k))]
        blocked = [k for k in differing if k not in allow_different]
        workload_note = ", ".join(f"{k} {_show(ra.get(k))} vs {_show(rb.get(k))}" for k in differing)
        meters = [k for k in MEASUREMENT_KEYS if not _same(ra.get(k), rb.get(k))]
        historical = "historical" in (ra.get("energy_kind"), rb.get("energy_kind"))
        for metric in metrics:
            label, unit, higher_better = METRICS[metric]
            mean_a, sd_a, n_a = (ra.get(f"{metric}_{p}") for p in ("mean", "std", "n"))
            mean_b, sd_b, n_b = (rb.get(f"{metric}_{p}") for p in ("mean", "std", "n"))
            n_a, n_b = int(n_a or 0), int(n_b or 0)
            if _nan(mean_a) or _nan(mean_b):
                continue
            stat = log_ratio_test(mean_a, sd_a, n_a, mean_b, sd_b, n_b)
            energy = metric in ENERGY_METRICS
            caveats = []
            if blocked:
                verdict = f"not comparable: {workload_note}"
                stat = {**stat, "low": math.nan, "high": math.nan, "p": math.nan, "t": math.nan}
            elif metric in ("duration_s", "iterations") and "duration" in (ra.get("window_kind"), rb.get("window_kind")):
                verdict = "setting, not a result: the sweep's window length"
                stat = {**stat, "low": math.nan, "high": math.nan, "p": math.nan, "t": math.nan}
            elif metric in WINDOW_ENERGY and historical:
                verdict = "not comparable: window energy (the historical side has no work count)"
                stat = {**stat, "low": math.nan, "high": math.nan, "p": math.nan, "t": math.nan}
            elif metric in WINDOW_ENERGY and not _same(ra.get("duration_s_setting"), rb.get("duration_s_setting")):
                verdict = (f"not comparable: window length {ra.get('duration_s_setting')} s vs "
                           f"{rb.get('duration_s_setting')} s (compare energy per sample)")
                stat = {**stat, "low": math.nan, "high": math.nan, "p": math.nan, "t": math.nan}
            elif min(n_a, n_b) < MIN_N:
                verdict = f"n too small (n = {min(n_a, n_b)}: no interval)"
            elif _nan(stat["p"]):
                verdict = "no difference"
            else:
                verdict = _verdict_word(stat["p"], stat["ratio"], higher_better, alpha)
                sys_a, sys_b = ra.get("energy_systematic_rel"), rb.get("energy_systematic_rel")
                if energy and verdict in ("better", "worse") and not (_nan(sys_a) and _nan(sys_b)):
                    la, ha = with_systematic(mean_a, sd_a, n_a, 0.0 if _nan(sys_a) else sys_a)
                    lb, hb = with_systematic(mean_b, sd_b, n_b, 0.0 if _nan(sys_b) else sys_b)
                    if not (hb < la or lb > ha):
                        verdict = "within systematic uncertainty"
                        caveats.append(f"meter systematic ±{_pct(sys_a)} / ±{_pct(sys_b)}")
                    unknown = [side for side, rel in (("A", sys_a), ("B", sys_b)) if _nan(rel)]
                    if unknown:  # counted as 0 above, which is not knowing it: the verdict says so
                        caveats.append(f"meter systematic unknown on {unknown[0]} (its interval is run-to-run "
                                       "spread only)")
                if differing:
                    caveats.append(f"allowed: {workload_note}")
            if energy and meters and not verdict.startswith("not comparable"):
                caveats.append("meters differ: " + ", ".join(
                    f"{k.replace('_', ' ')} {_show(ra.get(k))} vs {_show(rb.get(k))}" for k in meters))
            elif meters and not energy and "window_kind" in meters and not verdict.startswith(("not comparable",
                                                                                                "setting")):
                caveats.append(f"window kind {_show(ra.get('window_kind'))} vs {_show(rb.get('window_kind'))}")
            if caveats:
                verdict = f"{verdict}; {'; '.join(caveats)}"
            significant = verdict.startswith(("better", "worse"))
            rows.append({
                "test": ra["test"], "title": ra.get("title"), "subtest": ra["subtest"], "phase": ra["phase"],
                "metric": metric, "unit": unit, "node_type_a": ra.get("node_type"), "node_type_b": rb.get("node_type"),
                "batch_size_a": ra.get("batch_size"), "batch_size_b": rb.get("batch_size"),
                "input_shape_a": ra.get("input_shape"), "input_shape_b": rb.get("input_shape"),
                "mean_a": mean_a, "mean_b": mean_b, "n_a": n_a, "n_b": n_b,
                "ratio": stat["ratio"], "ratio_ci95_low": stat["low"], "ratio_ci95_high": stat["high"],
                "log_t": stat["t"], "welch_df": stat["df"], "p_value": stat["p"], "significant": significant,
                "verdict": verdict, "comparable": not blocked,
                "effect": abs(math.log(stat["ratio"])) if stat["ratio"] and stat["ratio"] > 0 else math.nan,
                "energy_source_a": ra.get("energy_label") if energy else "",
                "energy_source_b": rb.get("energy_label") if energy else "",
                "side_a": a.label, "side_b": b.label,
            })
    out = pd.DataFrame(rows)
    if out.empty:
        raise UserError(f"nothing to compare: {a.label} and {b.label} share no metric with values "
                        f"({', '.join(metrics)})")
    out["rank"] = (~out["comparable"]).astype(int)
    return (out.sort_values(["rank", "effect", "test", "phase"], ascending=[True, False, True, True],
                            na_position="last").drop(columns="rank").reset_index(drop=True))


def _pct(value) -> str:
    return "–" if _nan(value) else f"{float(value):.0%}"


def left_out(data: CampaignData) -> int:
    return int(data.stats.get("invalid_cells", pd.Series(dtype=float)).fillna(0).sum()) if len(data.stats) else 0


def to_markdown(table: pd.DataFrame, a: CampaignData | str, b: CampaignData | str,
                include_invalid: bool = False) -> str:
    from orchestrator.tables import fmt

    a_label = a.label if isinstance(a, CampaignData) else a
    b_label = b.label if isinstance(b, CampaignData) else b
    lines = [f"**Comparison: B = {b_label} vs A = {a_label}**", "",
             "Ratio B/A with its 95 % CI and Welch's t-test, both on the log scale (they agree: the CI excludes 1 "
             "exactly when p < 0.05); no interval below 3 repetitions a side.", ""]
    for side, name in ((a, "A"), (b, "B")):
        if isinstance(side, CampaignData) and left_out(side):
            lines.append(f"{name}: {left_out(side)} cell(s) with an invalid energy reading "
                         + ("kept (--include-invalid)." if include_invalid else
                            "left out (--include-invalid keeps them)."))
    if lines[-1] != "":
        lines.append("")
    lines += ["| test | sub-test | phase | metric | A | B | B/A | 95 % CI | p | verdict |",
              "|---|---|---|---|--:|--:|--:|---|--:|---|"]
    for r in table.to_dict("records"):
        ci = "–" if _nan(r["ratio_ci95_low"]) else f"[{fmt(r['ratio_ci95_low'])}, {fmt(r['ratio_ci95_high'])}]"
        p = "–" if _nan(r["p_value"]) else f"{r['p_value']:.2g}"
        lines.append(f"| {r['title']} | {r['subtest']} | {r['phase']} | {r['metric']} ({r['unit']}) | "
                     f"{fmt(r['mean_a'])} | {fmt(r['mean_b'])} | {fmt(r['ratio'])} | {ci} | {p} | "
                     f"{str(r['verdict']).replace('|', '/')} |")
    sources = sorted({s for col in ("energy_source_a", "energy_source_b") for s in table.get(col, []) if s})
    if sources:
        lines += ["", "Energy sources: " + " | ".join(sources)]
    return "\n".join(lines) + "\n"
