"""Nightly regression checks: references, history, verdict, JUnit XML and a Markdown summary.

Two gates, reported apart (ReFrame's split):
- sanity: did the run complete and were the meters valid? A broken run is
  never "slow"; it exits 2 and its numbers are not judged.
- performance: each metric against its reference band, and against the
  median of the last N valid runs in the history. A value outside its band
  in the bad direction is a regression (exit 1); in the good direction an
  improvement (reported, exit 0: re-baseline with `benchmark-tracker baseline`).

References file (YAML), ReFrame-style (value, lower, upper) with lower/upper
fractions of the value (absolute when the value is 0), null = unbounded,
keyed by the workload (a 96x96 campaign is never judged against 64x64 values):

    references:
      <node type>:
        <test> or <test>/<sub-test>:
          <phase>:
            - workload: {batch_size: 8, input_shape: 64x64x3, precision: fp32, execution: graph,
                         backend: tensorflow}
              <metric>: [value, lower, upper]     # e.g. [200.0, -0.10, null]

The gate fails closed: a missing or unreadable references file stops the
nightly before anything runs (exit 2), and a workload without a reference is
`no reference` (exit 2), never ok.

History: one Parquet file per run under <output>/history/, never rewritten
(append-only), at most one per campaign (its campaign id); the history check
uses the median of the last N valid runs of other campaigns.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from jobs.catalog import TESTS
from jobs.records import atomic_write, atomic_write_text
from orchestrator import safeio
from orchestrator.errors import UserError
from orchestrator.results import METRICS, CampaignData, load_campaign, valid_mask

EXIT_OK, EXIT_REGRESSION, EXIT_BROKEN = 0, 1, 2
WORKLOAD_KEYS = ("batch_size", "input_shape", "precision", "execution", "backend")
OK_STATES = {"done", "skipped"}  # skipped: adaptive repetitions decided it was not needed
DEFAULT_METRICS = ("throughput", "energy_per_sample_j")
DEFAULT_BANDS = {"throughput": 0.10, "duration_s": 0.10, "energy_per_sample_j": 0.15, "energy_j": 0.15,
                 "energy_kwh": 0.15, "samples_per_j": 0.15, "wh_per_1000": 0.15, "power_w": 0.15, "co2_kg": 0.15}
MAX_SPREAD_BAND = 0.5
HISTORY_DEFAULTS = {"runs": 7, "min_runs": 3, "tolerance": 0.10}
SANITY_DEFAULTS = {"require_measured": False, "min_window_fraction": 0.5}


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    value: float
    lower: float | None  # fraction of value (absolute when value == 0); None = unbounded
    upper: float | None

    def bounds(self) -> tuple:
        scale = abs(self.value) if self.value != 0 else 1.0
        low = -math.inf if self.lower is None else self.value + self.lower * scale
        high = math.inf if self.upper is None else self.value + self.upper * scale
        return low, high

    def describe(self) -> str:
        low, high = self.bounds()
        return f"{self.value:.4g} (l={low:.4g}, u={high:.4g})"


@dataclass
class References:
    # (node_type, test, subtest|None, phase) -> list of (workload dict, {metric: Reference})
    entries: dict = field(default_factory=dict)
    sanity: dict = field(default_factory=lambda: dict(SANITY_DEFAULTS))
    history: dict = field(default_factory=lambda: dict(HISTORY_DEFAULTS))
    require_reference: bool = True  # kept for old files: a missing reference is never ok
    path: Path | None = None

    def find(self, node_type, test, subtest, phase, metric, workload: dict | None = None):
        """The reference for this workload (None when there is none); workload=None matches any."""
        for key in ((node_type, test, subtest, phase), (node_type, test, None, phase)):
            for ref_workload, metrics in self.entries.get(key, []):
                if metric in metrics and (workload is None or same_workload(ref_workload, workload)):
                    return metrics[metric]
        return None

    def near_miss(self, node_type, test, subtest, phase, metric, workload: dict) -> str:
        """Why no reference matched: the workloads the file has for this test, if any."""
        for key in ((node_type, test, subtest, phase), (node_type, test, None, phase)):
            for ref_workload, metrics in self.entries.get(key, []):
                if metric in metrics:
                    if not ref_workload:
                        return "the reference has no workload (batch, input, precision...): re-baseline"
                    diff = [f"{k} {ref_workload.get(k)} in the reference, {workload.get(k)} here"
                            for k in WORKLOAD_KEYS if not _same_value(ref_workload.get(k), workload.get(k))]
                    return "; ".join(diff)
        return ""


def _same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def same_workload(reference: dict, workload: dict) -> bool:
    """Every workload key agrees; a reference without a workload matches nothing (re-baseline)."""
    if not reference:
        return False
    return all(_same_value(reference.get(k), workload.get(k)) for k in WORKLOAD_KEYS)


def workload_of(rec: dict) -> dict:
    out = {}
    for key in WORKLOAD_KEYS:
        value = rec.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = "tensorflow" if key == "backend" else None
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value if isinstance(value, (int, float, str)) or value is None else str(value)
    return out


def _tuple(raw, where: str) -> Reference:
    if isinstance(raw, dict):
        raw = [raw.get("value"), raw.get("lower"), raw.get("upper")]
    if not isinstance(raw, (list, tuple)) or len(raw) not in (1, 3) or not isinstance(raw[0], (int, float)):
        raise UserError(f"{where}: a reference is [value, lower, upper] (fractions, null = unbounded), got {raw!r}")
    value, lower, upper = (list(raw) + [None, None])[:3] if len(raw) == 1 else raw
    for name, bound in (("lower", lower), ("upper", upper)):
        if bound is not None and not isinstance(bound, (int, float)):
            raise UserError(f"{where}: {name} must be a number or null, got {bound!r}")
    if lower is not None and lower > 0 or upper is not None and upper < 0:
        raise UserError(f"{where}: lower must be <= 0 and upper >= 0 (fractions of the value)")
    return Reference(float(value), None if lower is None else float(lower), None if upper is None else float(upper))


def load_references(path: Path | None, required: bool = False) -> References:
    """The references file; `required`: a missing or unreadable file is a UserError (the gate fails closed)."""
    refs = References(path=path)
    if path is None or not Path(path).exists():
        if required:
            raise UserError(f"references file {path} does not exist: the nightly cannot judge anything",
                            ["create it from a good run: `benchmark-tracker baseline CAMPAIGN --references "
                             f"{path}`"])
        return refs
    try:
        doc = yaml.safe_load(safeio.read_text(Path(path))) or {}
    except (OSError, ValueError) as exc:
        raise UserError(f"references file {path} is unreadable: {safeio.describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a references file (a mapping with `references:`)")
    refs.sanity.update(doc.get("sanity") or {})
    refs.history.update(doc.get("history") or {})
    for node_type, tests in (doc.get("references") or {}).items():
        for test_key, phases in (tests or {}).items():
            test, _, subtest = str(test_key).partition("/")
            if test not in TESTS:
                raise UserError(f"{path}: unknown test {test!r} under {node_type}")
            for phase, entries in (phases or {}).items():
                entries = entries if isinstance(entries, list) else [entries]
                for entry in entries:
                    if not isinstance(entry, dict):
                        raise UserError(f"{path}: {node_type}.{test_key}.{phase}: an entry is a mapping of metrics")
                    workload = entry.get("workload") or {}
                    if not isinstance(workload, dict):
                        raise UserError(f"{path}: {node_type}.{test_key}.{phase}.workload must be a mapping")
                    metrics = {}
                    for metric, raw in entry.items():
                        if metric == "workload":
                            continue
                        if metric not in METRICS:
                            raise UserError(f"{path}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
                        metrics[metric] = _tuple(raw, f"{path}: {node_type}.{test_key}.{phase}.{metric}")
                    refs.entries.setdefault((node_type, test, subtest or None, phase), []).append(
                        (workload, metrics))
    return refs


def classify(value: float, ref: Reference, higher_is_better: bool) -> str:
    low, high = ref.bounds()
    if low <= value <= high:
        return "pass"
    above = value > high
    return "improvement" if above == higher_is_better else "regression"


def _test_key(test: str, subtest: str, phase: str) -> str:
    t = TESTS.get(test)
    several = t is not None and len(t.subtests_for(phase)) > 1
    return f"{test}/{subtest}" if several else test


def promote(campaign: str | Path, path: Path, metrics=DEFAULT_METRICS, band: float | None = None,
            lower: float | None = None, upper: float | None = None, unbounded_good: bool = False) -> dict:
    """Write a campaign's means as references (merging into `path`); returns the new entries.

    A band given explicitly is written as given, or refused when it is tighter than 2 run-to-run SDs
    (a band the campaign itself would fail); without one, the metric's default widened to 2 SDs.
    """
    if band is not None and not (math.isfinite(band) and 0 < band < 10):
        raise UserError(f"--band {band}: a relative band is a fraction > 0 (0.05 = ±5 %)")
    data = load_campaign(campaign)
    doc = {}
    if Path(path).is_file():
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    tree = doc.setdefault("references", {}) or {}
    doc["references"] = tree
    added, too_tight = {}, []
    for rec in data.stats.to_dict("records"):
        workload = workload_of(rec)
        for metric in metrics:
            mean = rec.get(f"{metric}_mean")
            if mean is None or mean != mean:
                continue
            sd = rec.get(f"{metric}_std")
            spread = min(MAX_SPREAD_BAND, 2 * sd / abs(mean)) if mean and sd is not None and sd == sd else 0.0
            if band is None:
                width = max(DEFAULT_BANDS.get(metric, 0.10), spread)
            else:
                width = band
                if band < spread:
                    too_tight.append(f"{rec['node_type']} {rec['test']} {rec['phase']} {metric}: 2 SDs are "
                                     f"±{spread:.1%}")
            lo = -width if lower is None else lower
            hi = width if upper is None else upper
            if unbounded_good:
                if METRICS[metric][2]:
                    hi = None
                else:
                    lo = None
            entry = [float(mean), None if lo is None else round(float(lo), 4), None if hi is None else round(float(hi), 4)]
            key = _test_key(rec["test"], rec["subtest"], rec["phase"])
            phase_entries = tree.setdefault(rec["node_type"], {}).setdefault(key, {}).get(rec["phase"])
            phase_entries = [] if phase_entries is None else (
                phase_entries if isinstance(phase_entries, list) else [phase_entries])
            target = next((e for e in phase_entries if isinstance(e, dict)
                           and same_workload(e.get("workload") or {}, workload)), None)
            if target is None:
                phase_entries = [e for e in phase_entries if isinstance(e, dict) and e.get("workload")]
                target = {"workload": workload}
                phase_entries.append(target)
            target[metric] = entry
            tree[rec["node_type"]][key][rec["phase"]] = phase_entries
            added[(rec["node_type"], key, rec["phase"], metric)] = entry
    if too_tight:
        raise UserError(f"--band {band} is tighter than this campaign's own run-to-run spread; nothing written",
                        too_tight[:8] + ["give a wider --band, or none (the default widens to 2 SDs)"])
    if not added:
        raise UserError(f"{campaign} has no measured values for {', '.join(metrics)}")
    doc.setdefault("sanity", dict(SANITY_DEFAULTS))
    doc.setdefault("history", dict(HISTORY_DEFAULTS))
    doc.pop("require_reference", None)
    doc["promoted_from"] = {"campaign": data.name, "at": _now(),
                            "tool_version": data.manifest.get("tool_version")}
    header = ("# Nightly references: (value, lower, upper); lower/upper are fractions of value, null = unbounded.\n"
              "# Keyed by node type, test, phase and workload. Written by `benchmark-tracker baseline`.\n")
    _atomic_text(Path(path), header + yaml.safe_dump(doc, sort_keys=False))
    return added


# ---------------------------------------------------------------- sanity


@dataclass
class Check:
    suite: str  # sanity | references | history
    name: str
    status: str  # pass | regression | improvement | broken | skipped
    message: str = ""
    value: float | None = None
    expected: str = ""


def sanity_checks(data: CampaignData, settings: dict, include_invalid: bool = False) -> list:
    results = data.results
    if results is None or not len(results):
        return [Check("sanity", "campaign", "broken", "the results table has no cells")]
    checks = []
    if not include_invalid:
        invalid = ~valid_mask(results) & (results["state"] == "done")
        if invalid.any():
            checks.append(Check("sanity", "invalid energy", "skipped",
                                f"{int(invalid.sum())} cell(s) with an invalid energy reading left out "
                                "(--include-invalid judges them)"))
            results = results[~invalid]
    for rec in results.to_dict("records"):
        name = f"{rec.get('test')} {rec.get('subtest')} {rec.get('phase')} {rec.get('node_type')} " \
               f"rep {rec.get('repetition')} [{rec.get('cell_id')}]"
        problems = []
        state = rec.get("state")
        if state not in OK_STATES:
            problems.append(f"state {state}" + (f": {rec.get('reason')}" if rec.get("reason") else ""))
        elif state == "done":
            energy = rec.get("energy_total_j")
            if not isinstance(energy, (int, float)) or not math.isfinite(energy) or energy <= 0:
                problems.append(f"no valid energy (energy_total_j={energy})")
            sources = [rec.get(f"energy_{d}_source") for d in ("cpu", "gpu", "ram")]
            if not any(isinstance(s, str) and s for s in sources):
                problems.append("no energy source recorded: the meter produced nothing")
            if settings.get("require_measured") and rec.get("energy_kind") != "measured":
                problems.append(f"energy is {rec.get('energy_kind')}, measured required")
            throughput = rec.get("throughput_samples_per_s")
            if not isinstance(throughput, (int, float)) or not throughput > 0:
                problems.append(f"no valid throughput ({throughput})")
            wanted, window = rec.get("duration_s"), rec.get("window_s")
            fraction = float(settings.get("min_window_fraction") or 0)
            if isinstance(wanted, (int, float)) and wanted == wanted and isinstance(window, (int, float)) \
                    and window < fraction * wanted:
                problems.append(f"window {window:.3g} s shorter than {fraction:g} x {wanted:g} s")
        warning = rec.get("low_confidence") if not problems and isinstance(rec.get("low_confidence"), str) else ""
        checks.append(Check("sanity", name, "broken" if problems else "pass",
                            "; ".join(problems) or (f"low confidence: {warning}" if warning else "")))
    return checks


# ---------------------------------------------------------------- history


HISTORY_COLUMNS = ["run_id", "campaign_id", "recorded_at", "node_type", "test", "subtest", "phase", "metric",
                   "value", "sanity"]


def campaign_id(data: CampaignData) -> str:
    """One id per campaign (its folder and creation time): judging it twice never adds a second history entry."""
    import hashlib

    root = str(Path(data.root).absolute()) if data.root is not None else data.name
    created = str(data.manifest.get("created_at") or "")
    return hashlib.sha256(f"{root}\0{created}".encode()).hexdigest()[:16]


def read_history(folder: Path, problems: list | None = None) -> pd.DataFrame:
    """Every run's rows; a damaged file is skipped (and listed), duplicates of a campaign keep its first run."""
    files = sorted(p for p in Path(folder).glob("*.parquet") if p.is_file() and not p.is_symlink()) \
        if Path(folder).is_dir() else []
    frames = []
    for path in files:
        try:
            import io

            frames.append(pd.read_parquet(io.BytesIO(safeio.read_bytes(path))))
        except Exception as exc:  # noqa: BLE001 - a damaged history file must not stop the nightly
            if problems is not None:
                problems.append(f"history file {path.name} skipped: {type(exc).__name__}")
    if not frames:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = pd.concat(frames, ignore_index=True)
    if "campaign_id" not in history:
        history["campaign_id"] = history["run_id"]
    history["campaign_id"] = history["campaign_id"].fillna(history["run_id"])
    first = history.sort_values("run_id").groupby("campaign_id")["run_id"].first()
    return history[history["run_id"] == history["campaign_id"].map(first)].reset_index(drop=True)


def history_rows(data: CampaignData, run_id: str, sanity_ok: bool, metrics) -> pd.DataFrame:
    rows = []
    for rec in data.stats.to_dict("records"):
        for metric in metrics:
            value = rec.get(f"{metric}_mean")
            if value is None or value != value:
                continue
            rows.append({"run_id": run_id, "campaign_id": campaign_id(data), "recorded_at": _now(),
                         "campaign": data.name, "batch_size": workload_of(rec)["batch_size"],
                         "input_shape": workload_of(rec)["input_shape"], "precision": workload_of(rec)["precision"],
                         "backend": workload_of(rec)["backend"],
                         "tool_version": data.manifest.get("tool_version"),
                         "sweep_sha256": data.manifest.get("sweep_sha256"), "node_type": rec["node_type"],
                         "test": rec["test"], "subtest": str(rec["subtest"]), "phase": rec["phase"],
                         "metric": metric, "value": float(value), "n": int(rec.get(f"{metric}_n") or 0),
                         "energy_label": rec.get("energy_label"), "sanity": "ok" if sanity_ok else "broken"})
    return pd.DataFrame(rows)


def append_history(folder: Path, rows: pd.DataFrame) -> Path | None:
    """Add one run's file; existing files are never touched (append-only)."""
    if rows.empty:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = rows["run_id"].iloc[0]
    path = folder / f"{run_id}.parquet"
    if path.exists():
        raise UserError(f"history already has run {run_id} ({path}); history is append-only")
    atomic_write(path, lambda tmp: rows.to_parquet(tmp, index=False))
    return path


def history_checks(data: CampaignData, history: pd.DataFrame, settings: dict, metrics) -> list:
    checks = []
    valid = history[history["sanity"] == "ok"] if len(history) else history
    if len(valid):  # distinct runs only: this campaign's own earlier judgement is not history
        valid = valid[valid["campaign_id"] != campaign_id(data)]
    runs, min_runs, tolerance = int(settings["runs"]), int(settings["min_runs"]), float(settings["tolerance"])
    for rec in data.stats.to_dict("records"):
        for metric in metrics:
            value = rec.get(f"{metric}_mean")
            if value is None or value != value:
                continue
            name = f"{rec['node_type']} {rec['test']} {rec['subtest']} {rec['phase']} {metric}"
            past = valid[(valid["node_type"] == rec["node_type"]) & (valid["test"] == rec["test"])
                         & (valid["subtest"] == str(rec["subtest"])) & (valid["phase"] == rec["phase"])
                         & (valid["metric"] == metric)] if len(valid) else valid
            workload = workload_of(rec)
            for key in ("batch_size", "input_shape", "precision", "backend"):
                if len(past) and key in past:
                    past = past[past[key].isna() | past[key].map(lambda v, w=workload[key]: _same_value(v, w))]
            order = sorted(past["run_id"].unique())[-runs:] if len(past) else []
            past = past[past["run_id"].isin(order)] if len(order) else past
            if len(order) < min_runs:
                checks.append(Check("history", name, "skipped", f"{len(order)} earlier valid run(s), "
                                    f"{min_runs} needed", value))
                continue
            values = past["value"].astype(float)
            median = float(values.median())
            spread = float(values.quantile(0.75) - values.quantile(0.25))
            change = (value - median) / median if median else math.inf
            status = "pass"
            if abs(change) > tolerance and abs(value - median) > spread:
                status = "improvement" if (change > 0) == METRICS[metric][2] else "regression"
            checks.append(Check("history", name, status,
                                f"{value:.4g} vs median {median:.4g} of the last {len(order)} runs "
                                f"({change:+.1%}; tolerance ±{tolerance:.0%}, IQR {spread:.3g})", value,
                                f"median {median:.4g}"))
    return checks


def reference_checks(data: CampaignData, refs: References, metrics=None) -> list:
    checks = []
    wanted = set(metrics or [])
    for rec in data.stats.to_dict("records"):
        workload = workload_of(rec)
        for metric in METRICS:
            ref = refs.find(rec["node_type"], rec["test"], str(rec["subtest"]), rec["phase"], metric, workload)
            value = rec.get(f"{metric}_mean")
            name = f"{rec['node_type']} {rec['test']} {rec['subtest']} {rec['phase']} {metric}"
            if ref is None:
                if metric in wanted:
                    why = refs.near_miss(rec["node_type"], rec["test"], str(rec["subtest"]), rec["phase"], metric,
                                         workload)
                    shape = ", ".join(f"{k} {v}" for k, v in workload.items())
                    checks.append(Check("references", name, "no reference",
                                        f"no reference for this workload ({shape})" + (f": {why}" if why else "")
                                        + "; promote a good run with `benchmark-tracker baseline`", value))
                continue
            if value is None or value != value:
                checks.append(Check("references", name, "regression", "no value measured", None, ref.describe()))
                continue
            status = classify(value, ref, METRICS[metric][2])
            message = "" if status == "pass" else (
                f"{'failed to meet' if status == 'regression' else 'better than'} reference: "
                f"{metric}={value:.4g} {METRICS[metric][1]}, expected {ref.describe()}")
            checks.append(Check("references", name, status, message, value, ref.describe()))
    return checks


# ---------------------------------------------------------------- verdict and outputs


@dataclass
class Verdict:
    exit_code: int
    checks: list
    energy_labels: list
    campaign: str
    run_id: str
    notes: list = field(default_factory=list)

    @property
    def word(self) -> str:
        if self.exit_code == EXIT_BROKEN and not any(c.status == "broken" for c in self.checks):
            return "no reference"
        return {EXIT_OK: "ok", EXIT_REGRESSION: "regression", EXIT_BROKEN: "broken"}[self.exit_code]

    def of(self, suite: str) -> list:
        return [c for c in self.checks if c.suite == suite]


def decide(checks: list) -> int:
    """broken or unjudged (no reference) -> 2, regression -> 1, else 0: nothing passes unchecked."""
    if any(c.status in ("broken", "no reference") for c in checks):
        return EXIT_BROKEN
    if any(c.status == "regression" for c in checks):
        return EXIT_REGRESSION
    return EXIT_OK


def evaluate(campaign: str | Path | CampaignData, references: Path | None, history_dir: Path | None,
             run_id: str | None = None, metrics=DEFAULT_METRICS, record: bool = True,
             include_invalid: bool = False) -> Verdict:
    refs = load_references(references, required=True)
    data = campaign if isinstance(campaign, CampaignData) else load_campaign(campaign, include_invalid=include_invalid)
    run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    checks = sanity_checks(data, refs.sanity, include_invalid)
    notes = list(data.problems)
    broken = any(c.status == "broken" for c in checks)
    history_problems = []
    if broken:
        notes.append("the run is broken: performance is not judged, and it does not count in the history median")
    else:
        checks += reference_checks(data, refs, metrics)
        if history_dir is not None:
            checks += history_checks(data, read_history(history_dir, history_problems), refs.history, metrics)
    notes += history_problems
    if record and history_dir is not None:
        known = read_history(history_dir)
        if len(known) and (known["campaign_id"] == campaign_id(data)).any():
            notes.append(f"campaign {data.name} is already in the history (run "
                         f"{known[known['campaign_id'] == campaign_id(data)]['run_id'].iloc[0]}): not recorded again")
        else:
            append_history(history_dir, history_rows(data, run_id, not broken, metrics))
    labels = sorted(set(data.stats["energy_label"].dropna())) if len(data.stats) else []
    return Verdict(decide(checks), checks, labels, data.name, run_id, notes)


def junit_xml(verdict: Verdict) -> str:
    root = ET.Element("testsuites", name=f"nightly {verdict.campaign} {verdict.run_id}")
    for suite in ("sanity", "references", "history"):
        checks = verdict.of(suite)
        element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)),
                                failures=str(sum(c.status == "regression" for c in checks)),
                                errors=str(sum(c.status == "broken" for c in checks)),
                                skipped=str(sum(c.status == "skipped" for c in checks)))
        element.set("errors", str(sum(c.status in ("broken", "no reference") for c in checks)))
        for check in checks:
            case = ET.SubElement(element, "testcase", classname=f"nightly.{suite}", name=check.name)
            if check.status == "regression":
                ET.SubElement(case, "failure", message=check.message, type="regression").text = check.message
            elif check.status in ("broken", "no reference"):
                ET.SubElement(case, "error", message=check.message, type=check.status.replace(" ", "-")).text = \
                    check.message
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.message)
            elif check.status == "improvement":
                ET.SubElement(case, "system-out").text = f"improvement: {check.message}"
            elif check.message:
                ET.SubElement(case, "system-out").text = check.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown_summary(verdict: Verdict) -> str:
    icon = {"pass": "ok", "regression": "REGRESSION", "improvement": "improvement", "broken": "BROKEN",
            "no reference": "NO REFERENCE", "skipped": "skipped"}
    lines = [f"# Nightly {verdict.campaign} {verdict.run_id}: {verdict.word} (exit {verdict.exit_code})", ""]
    sanity = verdict.of("sanity")
    bad = [c for c in sanity if c.status == "broken"]
    lines += ["## Sanity (did the run complete, were the meters valid)", ""]
    if bad:
        lines += [f"- BROKEN {c.name}: {c.message}" for c in bad]
    else:
        lines.append(f"- all {len(sanity)} cell(s) completed with valid meters")
    lines += [f"- {c.name}: {c.message}" for c in sanity if c.status == "skipped"]
    warned = [c for c in sanity if c.status == "pass" and c.message]
    if warned:
        lines.append(f"- {len(warned)} cell(s) with a low-confidence energy reading (valid, but noisy), e.g. "
                     f"{warned[0].name}: {warned[0].message}")
    lines += [f"- energy source: {label}" for label in verdict.energy_labels]
    for suite, title in (("references", "Performance vs references"),
                         ("history", "Performance vs history (median of the last runs)")):
        checks = verdict.of(suite)
        lines += ["", f"## {title}", ""]
        if not checks:
            lines.append("- not checked")
            continue
        lines += ["| check | status | value | expected | detail |", "|---|---|--:|---|---|"]
        order = {"no reference": 0, "regression": 1, "improvement": 2, "pass": 3, "skipped": 4}
        for c in sorted(checks, key=lambda c: (order.get(c.status, 9), c.name)):
            value = "–" if c.value is None or c.value != c.value else f"{c.value:.4g}"
            lines.append(f"| {c.name} | {icon[c.status]} | {value} | {c.expected} | {c.message} |")
    if verdict.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in verdict.notes]
    counts = {s: sum(c.status == s for c in verdict.checks) for s in icon}
    lines += ["", "Totals: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    return "\n".join(lines) + "\n"


def write_outputs(verdict: Verdict, folder: Path) -> tuple:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    junit, summary = folder / "nightly-junit.xml", folder / "nightly-summary.md"
    _atomic_text(junit, junit_xml(verdict))
    _atomic_text(summary, markdown_summary(verdict))
    return junit, summary


def broken_run(campaign: str, run_id: str, message: str) -> Verdict:
    """The verdict when the sweep could not even run."""
    return Verdict(EXIT_BROKEN, [Check("sanity", "sweep", "broken", message)], [], campaign, run_id)


def nightly(sweep: str, references: Path | None, output: Path, metrics=DEFAULT_METRICS,
            campaign: Path | None = None, include_invalid: bool = False) -> tuple:
    """Run the nightly sweep (unless `campaign` is given), collect, judge; returns (verdict, junit, summary).

    The references are read first: without them nothing runs (exit 2), so the gate cannot pass by default.
    """
    from orchestrator.collect import collect
    from orchestrator.sweep import run_sweep

    output = Path(output)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    history = output / "history"
    try:
        load_references(references, required=True)
    except UserError as exc:
        verdict = broken_run(str(campaign or sweep), run_id, f"not run: {exc}")
        return (verdict, *write_outputs(verdict, output))
    ran = campaign is None
    if ran:
        try:
            outcome = run_sweep(sweep, output=str(output / "runs" / run_id))
        except UserError as exc:
            verdict = broken_run(str(sweep), run_id, f"the sweep did not run: {exc}")
            return (verdict, *write_outputs(verdict, output))
        campaign = outcome.campaign.root
        if outcome.interrupted:
            verdict = broken_run(str(campaign), run_id, "the sweep was interrupted")
            return (verdict, *write_outputs(verdict, output))
        collect(Path(campaign))
    elif not any((Path(campaign) / name).is_file() for name in ("results.parquet", "results.csv")):
        collect(Path(campaign))
    verdict = evaluate(campaign, references, history, run_id=run_id, metrics=metrics, include_invalid=include_invalid)
    if ran:  # a copy beside the run; a campaign given by the user is left as it is
        write_outputs(verdict, Path(campaign) / "nightly")
    write_trend(history, output, metrics)
    return (verdict, *write_outputs(verdict, output))


def write_trend(history_dir: Path, output: Path, metrics=DEFAULT_METRICS) -> list:
    """<output>/nightly-trend.{png,svg}: the history's valid runs, one panel per metric (none without history)."""
    from orchestrator.figures import close_all, trend_figure, write_figures

    fig = trend_figure(read_history(history_dir), metrics)
    if fig is None:
        return []
    figures = {"nightly-trend": fig}
    try:
        return write_figures(figures, Path(output))
    finally:
        close_all(figures)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
