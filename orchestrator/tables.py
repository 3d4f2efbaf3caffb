"""Paper-style tables from a stats frame (orchestrator.results): Markdown, LaTeX and CSV.

- Table 2 / Table 3 of the seed paper (inference / training): EC (kWh),
  CE (kgCO2eq) and D (s) per model for a stated amount of work (by default
  the sub-test's nominal work, 22 iterations x its batch; never the window,
  whose length the sweep sets), each as mean [95 % CI]. The historical
  reference has no work count: its columns say "window".
- An efficiency table: throughput, J/sample, samples (images) per joule,
  Wh per 1,000 samples (inferences for the inference phase), mean power.

Every row carries its energy source label; Markdown and LaTeX render
numbers for people, CSV keeps the raw mean and CI bounds for machines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def fmt(value) -> str:
    """3 significant digits; scientific outside [0.01, 10^4), as the paper prints energies."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    if value == 0:
        return "0"
    if 0.01 <= abs(value) < 1e4:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_ci(mean, low, high, n=None) -> str:
    """'10 [9.1, 11]' (the 95 % CI, asymmetric on the log scale); '10 (n = 2: no interval)' below 3 values."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        if n is not None and n == n and 0 < int(n) < 3:
            return f"{fmt(mean)} (n = {int(n)}: no interval)"
        return fmt(mean)
    if math.isclose(mean - low, high - mean, rel_tol=1e-9):
        return f"{fmt(mean)} ± {fmt((high - low) / 2)}"
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


@dataclass
class Column:
    header: str
    field: str
    metric: bool = False  # render mean ± CI half-width, CSV keeps mean and bounds


@dataclass
class Table:
    name: str  # file stem
    title: str  # 'Table 2: ...' in Markdown and HTML
    columns: list
    data: pd.DataFrame
    notes: list = field(default_factory=list)
    caption: str = ""  # LaTeX numbers its tables itself: the caption has no 'Table N:'

    def flags(self, rec: dict) -> str:
        marks = []
        if rec.get("small_n"):
            marks.append(f"n = {int(rec.get('n') or 0)}: no interval")
        if rec.get("low_confidence_cells"):
            marks.append("low confidence")
        if rec.get("invalid_cells"):
            marks.append(f"{int(rec['invalid_cells'])} invalid left out")
        return "; ".join(marks)

    def cells(self) -> list:
        rows = []
        for rec in self.data.to_dict("records"):
            row = []
            for c in self.columns:
                if c.metric:
                    row.append(fmt_ci(rec.get(f"{c.field}_mean"), rec.get(f"{c.field}_ci95_low"),
                                      rec.get(f"{c.field}_ci95_high"), rec.get(f"{c.field}_n")))
                elif c.field == "_flags":
                    row.append(self.flags(rec) or "–")
                else:
                    value = rec.get(c.field)
                    row.append("–" if value is None or (isinstance(value, float) and math.isnan(value))
                               else str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))
            rows.append(row)
        return rows

    def numeric(self) -> pd.DataFrame:
        out = {}
        for c in self.columns:
            if c.metric:
                for part in ("mean", "ci95_low", "ci95_high", "n"):
                    out[f"{c.header} {part}"] = self.data.get(f"{c.field}_{part}")
            elif c.field == "_flags":
                out[c.header] = [self.flags(r) for r in self.data.to_dict("records")]
            else:
                out[c.header] = self.data.get(c.field)
        return pd.DataFrame(out)

    def markdown(self) -> str:
        headers = [c.header for c in self.columns]
        lines = [f"**{self.title}**", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" if not c.metric else "--:" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in self.cells()]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def latex(self) -> str:
        spec = "".join("r" if c.metric else "l" for c in self.columns)
        caption = self.caption or self.title
        lines = ["\\begin{table}[ht]", "\\centering", f"\\caption{{{latex_escape(caption)}}}",
                 f"\\label{{tab:{self.name}}}",
                 f"\\begin{{tabular}}{{{spec}}}", "\\hline",
                 " & ".join(latex_escape(c.header) for c in self.columns) + " \\\\", "\\hline"]
        lines += [" & ".join(latex_escape(v) for v in row) + " \\\\" for row in self.cells()]
        lines += ["\\hline", "\\end{tabular}"]
        if self.notes:
            lines.append("\\par\\footnotesize " + " ".join(latex_escape(n) for n in self.notes))
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        return self.numeric().to_csv(index=False)

    def html(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c.header)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td{' class=num' if c.metric else ''}>{escape(v)}</td>"
                                        for c, v in zip(self.columns, row)) + "</tr>" for row in self.cells())
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        return (f"<table id=\"{escape(self.name)}\"><caption>{escape(self.title)}</caption><thead><tr>{head}</tr>"
                f"</thead><tbody>{body}</tbody></table>" + (f"<ul class=notes>{notes}</ul>" if notes else ""))


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$",
          "–": "--", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _pue_note(stats: pd.DataFrame, include_pue: bool) -> str:
    pues = sorted({p for p in stats.get("pue", pd.Series(dtype=float)).dropna() if p == p})
    shown = ", ".join(f"{p:g}" for p in pues) or "unknown"
    if include_pue:
        return f"EC includes PUE ({shown}), as the paper's tables do; so do the figures."
    return f"EC excludes PUE (so do the figures); CE applies PUE ({shown}) and the carbon intensity."


def work_caption(stats: pd.DataFrame) -> str:
    """Which work EC and D refer to (the stats' `work_basis`, set by aggregate), for captions."""
    bases = set(stats.get("work_basis", pd.Series(dtype=object)).dropna())
    fixed = [b for b in bases if b != "nominal"]
    if fixed and len(bases) == 1:
        return f"per {int(fixed[0]):,} samples of work"
    return "per nominal work of each sub-test (22 iterations x its batch)"


def paper_table(stats: pd.DataFrame, phase: str, include_pue: bool = False, campaign: str = "") -> Table:
    """The seed paper's Table 2 (inference) or Table 3 (training) layout, normalised to work."""
    data = stats[stats["phase"] == phase].reset_index(drop=True)
    number = 2 if phase == "inference" else 3
    historical = bool(len(data)) and (data["energy_kind"] == "historical").all()
    interval = "Values: mean [95 % CI] over repetitions (log scale, never below zero); no interval below 3."
    if historical:
        energy_field = "facility_energy_kwh" if include_pue else "energy_kwh"
        columns = [Column("Model", "title"), Column("Sub-test", "subtest"), Column("Node type", "node_type"),
                   Column("n", "duration_s_n"), Column("EC (kWh)", energy_field, True),
                   Column("CE (kgCO2eq)", "co2_kg", True), Column("D (s)", "duration_s", True),
                   Column("Energy source", "energy_label")]
        what = "window energy of the tracker (iteration counts never recorded: not normalisable to work)"
        notes = [interval, _pue_note(data, include_pue),
                 "EC and D are the tracker's window, start to stop (tracker start-up included, about 30 s per "
                 "sub-test): historical data, not normalised to work."]
    else:
        energy_field = "work_facility_energy_kwh" if include_pue else "work_energy_kwh"
        columns = [Column("Model", "title"), Column("Sub-test", "subtest"), Column("Node type", "node_type"),
                   Column("Batch", "batch_size"), Column("Work (samples)", "work_samples"), Column("n", "n"),
                   Column("EC (kWh)", energy_field, True), Column("CE (kgCO2eq)", "work_co2_kg", True),
                   Column("D (s)", "work_duration_s", True), Column("Flags", "_flags"),
                   Column("Energy source", "energy_label")]
        what = work_caption(data)
        notes = [interval, _pue_note(data, include_pue),
                 f"EC and D are {what}: EC = J/sample x samples, D = samples / throughput, from steady-state "
                 "windows; the window energy itself is in the results table (energy_total_j)."]
    caption = f"{phase.capitalize()}: EC, CE and D {what}" + (f", {campaign}" if campaign else "")
    return Table(f"table{number}_{phase}", f"Table {number}: {caption}", columns, data, notes, caption=caption)


def efficiency_table(stats: pd.DataFrame, campaign: str = "") -> Table:
    columns = [Column("Model", "title"), Column("Sub-test", "subtest"), Column("Phase", "phase"),
               Column("Node type", "node_type"), Column("Batch", "batch_size"), Column("n", "throughput_n"),
               Column("Throughput (samples/s)", "throughput", True),
               Column("Energy per sample (J)", "energy_per_sample_j", True),
               Column("Samples per J", "samples_per_j", True),
               Column("Wh per 1,000 samples", "wh_per_1000", True),
               Column("Mean power (W)", "power_w", True), Column("Flags", "_flags")]
    if stats.get("net_energy_per_sample_j_mean", pd.Series(dtype=float)).notna().any():
        columns.append(Column("Net energy per sample (J, idle subtracted)", "net_energy_per_sample_j", True))
    columns.append(Column("Energy source", "energy_label"))
    notes = ["Values: mean [95 % CI] over repetitions (log scale, never below zero); no interval below 3.",
             "Samples are images for the image models; for the inference phase, Wh per 1,000 samples is "
             "Wh per 1,000 inferences.",
             "Energies exclude PUE."]
    flagged = int(stats.get("low_confidence_cells", pd.Series(dtype=float)).fillna(0).sum())
    if flagged:
        notes.append(f"{flagged} cell(s) have a low-confidence energy reading (window shorter than the meter "
                     "needs); see the results table's low_confidence column.")
    caption = "Throughput and energy efficiency" + (f", {campaign}" if campaign else "")
    return Table("efficiency", caption, columns, stats.reset_index(drop=True), notes, caption=caption)


def build_tables(stats: pd.DataFrame, campaign: str = "", include_pue: bool = False, notes: list = ()) -> list:
    tables = [paper_table(stats, phase, include_pue, campaign) for phase in ("inference", "training")
              if (stats.get("phase") == phase).any()]
    tables.append(efficiency_table(stats, campaign))
    for table in tables:
        table.notes.extend(notes)
    return tables


def write_tables(tables: list, folder: Path) -> list:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        for ext, text in (("md", table.markdown()), ("tex", table.latex()), ("csv", table.csv())):
            path = folder / f"{table.name}.{ext}"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
    return paths
