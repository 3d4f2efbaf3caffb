"""One self-contained HTML report per campaign: tables, figures (inline SVG) and provenance.

Reads only what orchestrator.results loads (the results table, the manifest,
the frozen sweep). The HTML file references nothing outside itself, so it
reads offline; next to it, the tables (Markdown, LaTeX, CSV) and figures
(PNG, SVG) are written as files for papers.

    <out>/report.html
    <out>/tables/{table2_inference,table3_training,efficiency}.{md,tex,csv}
    <out>/figures/<name>.{png,svg}
"""
from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from orchestrator import __version__
from orchestrator import safeio
from orchestrator.collect import DOMAINS, campaign_notes, factors_in_use
from orchestrator.errors import UserError
from orchestrator.figures import build_figures, close_all, trace_figure, write_figures
from orchestrator.results import CampaignData, load_campaign, select, source_label
from orchestrator.tables import build_tables, write_tables

TEMPLATES = Path(__file__).resolve().parent / "templates"


TRACE_FILE = "trace.parquet"
MAX_TRACES = 4  # one per (test, phase) at most: a report, not a dump


@dataclass
class Report:
    html: Path
    tables: list
    figures: list
    problems: list = field(default_factory=list)
    factors: list = field(default_factory=list)  # lines for the console: the factors in use


def inline_svg(path: Path) -> str:
    """An SVG file's <svg> element, ready to paste into HTML (no XML prolog, no DOCTYPE)."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.find("<svg")
    return text[start:] if start >= 0 else ""


def _join(values) -> str:
    values = sorted({str(v) for v in values if v is not None and v == v and str(v) != ""})
    return ", ".join(values) or "–"


def provenance(data: CampaignData) -> dict:
    results = data.results
    meters, versions, nodes = [], [], []
    node_columns = ["node_type", "hostname", "cpu_model", "gpu_models", "gpu_driver", "compute_device"]
    if results is not None and len(results):
        done = results[results["state"] == "done"] if "state" in results else results
        for domain in DOMAINS:
            column = f"energy_{domain}_source"
            for source, count in sorted(Counter(done.get(column, pd.Series(dtype=str)).dropna()).items()):
                meters.append({"domain": domain, "label": source_label(source), "cells": count})
        versions = [(name, _join(done.get(name, []))) for name in ("tensorflow", "keras", "codecarbon")]
        present = [c for c in node_columns if c in done]
        nodes = done[present].drop_duplicates().fillna("–").to_dict("records")
        node_columns = present
    elif data.historical:
        meters = [{"domain": "cpu, ram", "label": data.manifest.get("meter", "historical"), "cells": "10 runs"},
                  {"domain": "gpu", "label": "not counted (GPUs idle)", "cells": "–"}]
        nodes = [{"node_type": nt, "hostname": data.manifest.get("hardware", "")}
                 for nt in sorted(set(data.stats["node_type"]))]
        node_columns = ["node_type", "hostname"]
    manifest = [(k, v) for k, v in data.manifest.items() if k != "cells"]
    return {"meters": meters, "versions": versions, "nodes": nodes, "node_columns": node_columns,
            "manifest": manifest}


def _summary(data: CampaignData, include_invalid: bool = False) -> list:
    stats = data.stats
    rows = [("campaign", data.name)]
    if data.results is not None and "state" in data.results:
        states = Counter(data.results["state"])
        rows.append(("cells", ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"))
    if len(stats):
        rows.append(("tests", _join(stats["title"])))
        rows.append(("phases", _join(stats["phase"])))
        rows.append(("node types", _join(stats["node_type"])))
        flagged = int(stats.get("low_confidence_cells", pd.Series(dtype=float)).fillna(0).sum())
        if flagged:
            rows.append(("low-confidence energy", f"{flagged} cell(s): window shorter than the meter needs"))
        rows.append(("PUE", _join(f"{p:g}" for p in stats["pue"].dropna())))
        rows.append(("carbon intensity (g/kWh)", _join(f"{p:g}" for p in stats["carbon_intensity_g_per_kwh"].dropna())))
        if data.results is not None and len(data.results):
            rows.append(("factor source", factors_in_use(data.results).get("factor_source", "unknown")))
        invalid = int(stats.get("invalid_cells", pd.Series(dtype=float)).fillna(0).sum())
        if invalid:
            rows.append(("invalid energy", f"{invalid} cell(s) kept in the tables and figures (--include-invalid)"
                         if include_invalid else f"{invalid} cell(s) left out of every table and figure "
                         "(--include-invalid keeps them)"))
    return rows


def _verdict(value) -> bool | None:
    """energy_valid as the results table holds it (bool, 'True'/'False' text, 0/1, NaN): True, False or None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


def _done(results: pd.DataFrame | None) -> pd.DataFrame:
    if results is None or not len(results):
        return pd.DataFrame()
    return results[results["state"] == "done"] if "state" in results else results


def trace_figures(data: CampaignData) -> dict:
    """Power traces of a few done cells that recorded meter samples (cells/<id>/trace.parquet).

    Invalid cells come first: their trace is the evidence of what the gate found.
    """
    figures = {}
    results = data.results
    if data.root is None or results is None or "cell_id" not in results:
        return figures
    done = _done(results)
    records = sorted(done.to_dict("records"), key=lambda r: _verdict(r.get("energy_valid")) is not False)
    seen = set()
    for rec in records:
        key = (rec.get("test"), rec.get("phase"), rec.get("node_type"))
        if key in seen or len(figures) >= MAX_TRACES:
            continue
        try:
            trace = pd.read_parquet(io.BytesIO(safeio.read_bytes(data.root / "cells" / str(rec["cell_id"]) /
                                                                 TRACE_FILE)))
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged trace is a problem, not a crash
            data.problems.append(f"{rec['cell_id']}: {TRACE_FILE} unreadable ({type(exc).__name__})")
            continue
        window = (rec.get("window_start_unix"), rec.get("window_end_unix"))
        title = f"{rec.get('test')} {rec.get('subtest')} {rec.get('phase')}, {rec.get('node_type')}"
        if _verdict(rec.get("energy_valid")) is False:
            title += " (energy invalid)"
        sources = "; ".join(str(rec.get(f"energy_{d}_source")) for d in DOMAINS if rec.get(f"energy_{d}_source"))
        fig = trace_figure(trace, title, window, sources)
        if fig is not None:
            seen.add(key)
            figures[f"trace_{rec['cell_id']}"] = fig
    return figures


MAX_EVIDENCE_CELLS = 200  # the per-cell verdicts listed in the HTML; results.csv keeps them all


def _pct(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if value != value else f"±{value:.0%}"


def evidence_groups(data: CampaignData, include_invalid: bool = False) -> list:
    """Per group: cells used, invalid ones (left out or kept), J/sample and energy with the statistical
    95 % CI and the ± that adds the source's systematic term (summary's *_total_low/high)."""
    from orchestrator.tables import fmt_ci

    rows = []
    if data.historical or not len(data.stats):
        return rows
    several_backends = data.stats.get("backend", pd.Series(dtype=object)).nunique() > 1
    for rec in data.stats.to_dict("records"):
        invalid = int(rec.get("invalid_cells") or 0)
        label = f"{rec.get('title')} ({rec.get('subtest')}) {rec.get('phase')}, {rec.get('node_type')}"
        if several_backends:
            label += f", {rec.get('backend')}"
        row = {"group": label, "n": int(rec.get("n") or 0),
               "invalid": (f"{invalid} " + ("kept (--include-invalid)" if include_invalid else "left out")
                           if invalid else "0"),
               "systematic": _pct(rec.get("energy_systematic_rel")), "source": rec.get("energy_label") or "–",
               "invalid_count": invalid}
        for metric, key in (("energy_per_sample_j", "per_sample"), ("energy_j", "energy")):
            mean, n = rec.get(f"{metric}_mean"), rec.get(f"{metric}_n")
            row[f"{key}_stat"] = fmt_ci(mean, rec.get(f"{metric}_ci95_low"), rec.get(f"{metric}_ci95_high"), n)
            total_low, total_high = rec.get(f"{metric}_total_low"), rec.get(f"{metric}_total_high")
            if total_low is None or total_low != total_low:  # no systematic term known, or n < 3
                reason = "n < 3: no interval" if n is not None and n == n and 0 < int(n) < 3 else "no systematic term"
                row[f"{key}_total"] = f"– ({reason})" if mean == mean and mean is not None else "–"
            else:
                row[f"{key}_total"] = fmt_ci(mean, total_low, total_high, n)
        rows.append(row)
    return rows


def cell_systematic(rec: dict) -> str:
    """One cell's J/sample with its source's systematic 95 % interval (log scale, 1.96 x the 1-sigma term)."""
    import math

    from orchestrator.intervals import Z
    from orchestrator.tables import fmt, fmt_ci

    value, rel = pd.to_numeric(pd.Series([rec.get("energy_per_sample_j"), rec.get("energy_systematic_rel")]),
                               errors="coerce")
    if value != value or value <= 0:
        return "–"
    if rel != rel:
        return f"{fmt(value)} (no systematic term)"
    half = Z * float(rel)
    return fmt_ci(value, value * math.exp(-half), value * math.exp(half))


def evidence_cells(data: CampaignData, traces: set) -> tuple:
    """(rows, counts, left over): each done cell's gate verdict and reasons, invalid cells first."""
    done = _done(data.results)
    counts = {"valid": 0, "invalid": 0, "not judged": 0}
    rows = []
    for rec in done.to_dict("records"):
        verdict = _verdict(rec.get("energy_valid"))
        word = {True: "valid", False: "invalid", None: "not judged"}[verdict]
        counts[word] += 1
        cell_id = str(rec.get("cell_id", ""))
        sources = "; ".join(f"{d} {source_label(rec.get(f'energy_{d}_source'))}" for d in DOMAINS
                            if isinstance(rec.get(f"energy_{d}_source"), str) and rec.get(f"energy_{d}_source"))
        repetition = rec.get("repetition")
        rows.append({"cell_id": cell_id, "verdict": word, "per_sample": cell_systematic(rec),
                     "cell": f"{rec.get('test')} {rec.get('subtest')} {rec.get('phase')}, {rec.get('node_type')}"
                             + (f", rep {int(repetition)}" if isinstance(repetition, (int, float))
                                and repetition == repetition else ""),
                     "reasons": rec.get("energy_invalid_reasons") if isinstance(rec.get("energy_invalid_reasons"), str)
                     else ("–" if verdict is not None else "no gate verdict in this result (older record)"),
                     "systematic": _pct(rec.get("energy_systematic_rel")), "sources": sources or "–",
                     "trace": f"trace_{cell_id}" if f"trace_{cell_id}" in traces else None,
                     "trace_file": data.root is not None and (data.root / "cells" / cell_id / TRACE_FILE).is_file()})
    order = {"invalid": 0, "not judged": 1, "valid": 2}
    rows.sort(key=lambda r: order[r["verdict"]])
    return rows[:MAX_EVIDENCE_CELLS], counts, max(0, len(rows) - MAX_EVIDENCE_CELLS)


def render_html(data: CampaignData, tables: list, svg_figures: list, include_invalid: bool = False) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    labels = sorted(set(data.stats["energy_label"].dropna())) if len(data.stats) else []
    why = campaign_notes(data.results) if data.results is not None else []
    cells, counts, left = evidence_cells(data, {f["name"] for f in svg_figures if f["name"].startswith("trace_")})
    return env.get_template("report.html.j2").render(
        title=f"Benchmark report: {data.name}" + (" (historical)" if data.historical else ""),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), tool_version=__version__,
        historical=data.historical, notes=data.notes, energy_labels=labels or ["no energy data"],
        summary=_summary(data, include_invalid), tables=[t.html() for t in tables], figures=svg_figures, why=why,
        problems=data.problems, sweep_text=data.sweep_text, evidence_groups=evidence_groups(data, include_invalid),
        evidence_cells=cells, evidence_counts=counts, evidence_left=left, include_invalid=include_invalid,
        **provenance(data))


def make_report(campaign: str | Path, out: Path | None = None, include_pue: bool = False, tests=None, phases=None,
                node_types=None, work_samples: int | None = None, include_invalid: bool = False) -> Report:
    data = select(load_campaign(campaign, include_invalid=include_invalid, work_samples=work_samples),
                  tests, phases, node_types)
    if out is None:
        if data.root is None:
            raise UserError(f"{campaign} is a built-in reference: give an output folder (--out)")
        out = data.root / "report"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(data.stats, data.name, include_pue=include_pue,
                          notes=data.notes if data.historical else [])
    from orchestrator.accuracy import accuracy_section  # the fit phase's tables and figures (issue #13)

    fit_tables, fit_figures = accuracy_section(data, data.name)
    tables = tables + fit_tables
    table_paths = write_tables(tables, out / "tables")
    figures = build_figures(data.stats, include_pue=include_pue)
    figures.update(trace_figures(data))
    figures.update(fit_figures)
    from orchestrator.scaling import scaling_figures  # scale (#15): efficiency against workers

    figures.update(scaling_figures(data.results))
    captions = {name: getattr(fig, "caption", name) for name, fig in figures.items()}
    try:
        figure_paths = write_figures(figures, out / "figures")
    finally:
        close_all(figures)
    svgs = [{"name": p.stem, "svg": inline_svg(p), "caption": captions.get(p.stem, p.stem)}
            for p in figure_paths if p.suffix == ".svg"]
    html = render_html(data, tables, svgs, include_invalid)
    if re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", html):
        raise RuntimeError("report would reference an external resource")  # self-contained, by construction
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    factors = []
    if len(data.stats):
        factors.append("factors: PUE " + _join(f"{p:g}" for p in data.stats["pue"].dropna()) + ", carbon intensity "
                       + _join(f"{p:g}" for p in data.stats["carbon_intensity_g_per_kwh"].dropna()) + " g/kWh")
    return Report(path, table_paths, figure_paths, list(data.problems), factors)
