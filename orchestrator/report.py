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


def _summary(data: CampaignData) -> list:
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
            rows.append(("invalid energy", f"{invalid} cell(s) left out of every table and figure"))
    return rows


def trace_figures(data: CampaignData) -> dict:
    """Power traces of a few done cells that recorded meter samples (cells/<id>/trace.parquet)."""
    figures = {}
    results = data.results
    if data.root is None or results is None or "cell_id" not in results:
        return figures
    done = results[results["state"] == "done"] if "state" in results else results
    seen = set()
    for rec in done.to_dict("records"):
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
        sources = "; ".join(str(rec.get(f"energy_{d}_source")) for d in DOMAINS if rec.get(f"energy_{d}_source"))
        fig = trace_figure(trace, title, window, sources)
        if fig is not None:
            seen.add(key)
            figures[f"trace_{rec['cell_id']}"] = fig
    return figures


def render_html(data: CampaignData, tables: list, svg_figures: list) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    labels = sorted(set(data.stats["energy_label"].dropna())) if len(data.stats) else []
    why = campaign_notes(data.results) if data.results is not None else []
    return env.get_template("report.html.j2").render(
        title=f"Benchmark report: {data.name}" + (" (historical)" if data.historical else ""),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), tool_version=__version__,
        historical=data.historical, notes=data.notes, energy_labels=labels or ["no energy data"],
        summary=_summary(data), tables=[t.html() for t in tables], figures=svg_figures, why=why,
        problems=data.problems, sweep_text=data.sweep_text, **provenance(data))


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
    html = render_html(data, tables, svgs)
    if re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", html):
        raise RuntimeError("report would reference an external resource")  # self-contained, by construction
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    factors = []
    if len(data.stats):
        factors.append("factors: PUE " + _join(f"{p:g}" for p in data.stats["pue"].dropna()) + ", carbon intensity "
                       + _join(f"{p:g}" for p in data.stats["carbon_intensity_g_per_kwh"].dropna()) + " g/kWh")
    return Report(path, table_paths, figure_paths, list(data.problems), factors)
