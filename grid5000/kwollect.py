"""Kwollect ground truth: a node's wall (wattmeter) or BMC power over a cell's window, in joules.

    GET <api>/sites/<site>/metrics?nodes=<node>&metrics=<m>&start_time=<t0-30>&end_time=<t1+30>[&job_id=<id>]

Records are `{"timestamp": ISO with offset, "device_id", "metric_id", "value", "labels"}`, sorted by time.
The power curve (piecewise linear through the samples, held flat beyond the first/last one) is integrated
over exactly [t0, t1], the cell's measured window (result.json `window.start_unix`/`end_unix`). Gaps longer
than 2.5 expected periods are listed and make the value `complete: false`. The raw answer is kept beside
the result (kwollect.json) so that the energy can be recomputed.

The result gets `energy.external.<label>` (`wattmeter`, `pdu`, `bmc`): node-level AC (wattmeter, PDU) or
BMC power for the whole node, so its ratio to the software estimate (RAPL/NVML/codecarbon, DC components)
is reported, not substituted. A multi-host cell (#15) gets each host's reading over the window that host saw
in its `energy.nodes` record, and the cell's figure is their sum, or `incomplete` (no sum) when a host has none.

    python -m grid5000.kwollect annotate <cell folder | campaign folder>... [--site S --metrics M1,M2]
        [--url API] [--wait S] [--node N] [--job-id ID]

Credentials: none inside Grid'5000. From outside, HTTP basic auth from $G5K_USER/$G5K_PASSWORD or
~/.python-grid5000.yaml (`username`, `password`); never prompted for, never printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from jobs.records import CELL_FILE, RESULT_FILE, atomic_write_json, now_iso, read_json

DEFAULT_URL = "https://api.grid5000.fr/stable/"
RAW_FILE = "kwollect.json"
LABELS = {"wattmetre_power_watt": "wattmeter", "pdu_outlet_power_watt": "pdu", "bmc_node_power_watt": "bmc"}
EXPECTED_PERIOD_S = {"wattmetre_power_watt": 1.0, "pdu_outlet_power_watt": 1.0, "bmc_node_power_watt": 5.0}
MARGIN_S = 30.0          # fetched on each side of the window, so the curve is known at its edges
CHUNK_S = 1800.0         # Kwollect stops a statement after 5 min: long windows go in pieces
GAP_PERIODS = 2.5        # a spacing over this many expected periods is a gap
HIGH_RATE_FACTOR = 5     # samples this much denser than the catalogue's period: the on-demand rate
HTTP_TIMEOUT_S = 30.0


class KwollectError(Exception):
    """Kwollect could not give the data (HTTP error, bad answer, unreachable)."""


def credentials():
    """(user, password) for use from outside Grid'5000, or None. Never prompts."""
    user, password = os.environ.get("G5K_USER"), os.environ.get("G5K_PASSWORD")
    if user and password:
        return user, password
    path = Path.home() / ".python-grid5000.yaml"
    try:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        if data.get("username") and data.get("password"):
            return str(data["username"]), str(data["password"])
    except Exception:  # noqa: BLE001 - a missing or malformed file means no credentials, never a prompt
        pass
    return None


def parse_time(value) -> float:
    """Epoch seconds from a number or an ISO timestamp (with an offset; naive means UTC)."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def fetch(url: str, site: str, metrics: list, start: float, end: float, nodes: list | None = None,
          job_id=None, session=None, chunk_s: float = CHUNK_S) -> list:
    """Kwollect records for [start, end] (epoch seconds), in chunks; raises KwollectError."""
    import requests

    session = session or requests.Session()
    auth = credentials()
    endpoint = f"{url.rstrip('/')}/sites/{site}/metrics"
    records = []
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(end, chunk_start + chunk_s)
        params = {"metrics": ",".join(metrics), "start_time": f"{chunk_start:.3f}", "end_time": f"{chunk_end:.3f}"}
        if nodes:
            params["nodes"] = ",".join(nodes)
        if job_id is not None:
            params["job_id"] = str(job_id)
        try:
            answer = session.get(endpoint, params=params, auth=auth, timeout=HTTP_TIMEOUT_S)
        except requests.RequestException as exc:
            raise KwollectError(f"cannot reach {endpoint}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise KwollectError(_http_problem(endpoint, answer, auth is not None))
        try:
            data = answer.json()
        except ValueError:
            raise KwollectError(f"{endpoint} answered HTTP 200 without JSON: {answer.text[:200]!r}") from None
        if not isinstance(data, list):
            raise KwollectError(f"{endpoint} answered {type(data).__name__}, not a list of records")
        records.extend(data)
        chunk_start = chunk_end
    return records


def _http_problem(endpoint: str, answer, had_credentials: bool) -> str:
    try:
        body = answer.json()
        message = body.get("message") or body.get("error") or json.dumps(body)[:200]
    except (ValueError, AttributeError):
        message = answer.text[:200].strip()
    text = f"{endpoint} answered HTTP {answer.status_code}: {message}"
    if answer.status_code == 401:
        text += ("; credentials were refused" if had_credentials else
                 "; outside Grid'5000 set G5K_USER/G5K_PASSWORD or ~/.python-grid5000.yaml")
    elif "timeout" in message.lower():
        text += "; ask for a shorter window"
    return text


def series(records: list, metric: str) -> dict:
    """{(device, labels): [(t, watts)]} for one metric; `_device_orig` (summed devices) is not a key."""
    out = {}
    for record in records:
        if record.get("metric_id") != metric or record.get("value") is None:
            continue
        try:
            value = float(record["value"])
            moment = parse_time(record["timestamp"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isnan(value):
            continue
        labels = {k: v for k, v in (record.get("labels") or {}).items() if k != "_device_orig"}
        key = (record.get("device_id"), json.dumps(labels, sort_keys=True))
        out.setdefault(key, []).append((moment, value))
    return {k: sorted(v) for k, v in out.items()}


def effective_period(spacings: list, expected_period: float | None) -> tuple:
    """(period, mode): the catalogue's period, or the measured one when the node samples much faster.

    A wattmeter asked for on demand (`-t monitor=wattmetre_power_watt`) answers every 20 ms (50 Hz,
    v1/v2 meters) or 10 ms (v3) instead of the default 1 s: judging its gaps against 1 s would hide them.
    """
    median = statistics.median(spacings) if spacings else None
    if expected_period and median and median < expected_period / HIGH_RATE_FACTOR:
        return median, "high-rate"
    return (expected_period or median), "default"


def integrate(points: list, t0: float, t1: float, expected_period: float | None = None) -> dict:
    """Energy (J) of one power series over [t0, t1]: trapezoids, linear between samples, flat beyond them."""
    points = sorted(points)
    times = [t for t, _ in points]
    spacings = [b - a for a, b in zip(times, times[1:]) if b > a]
    period, mode = effective_period(spacings, expected_period)
    threshold = GAP_PERIODS * period if period else math.inf

    def value_at(t: float) -> float:
        if t <= times[0]:
            return points[0][1]
        if t >= times[-1]:
            return points[-1][1]
        for (ta, va), (tb, vb) in zip(points, points[1:]):
            if ta <= t <= tb:
                return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
        return points[-1][1]

    inside = [(t, v) for t, v in points if t0 < t < t1]
    curve = [(t0, value_at(t0)), *inside, (t1, value_at(t1))]
    joules = sum((tb - ta) * (va + vb) / 2 for (ta, va), (tb, vb) in zip(curve, curve[1:]))
    # Gaps: the sample times that frame the window, then every spacing inside it.
    before = [t for t in times if t <= t0]
    after = [t for t in times if t >= t1]
    frame = [before[-1] if before else None, *[t for t, _ in inside], after[0] if after else None]
    gaps = []
    if frame[0] is None:
        first = inside[0][0] if inside else (after[0] if after else t1)
        if first - t0 > threshold or not math.isfinite(threshold):
            gaps.append([t0, min(first, t1)])
        frame = frame[1:]
    if frame and frame[-1] is None:
        last = inside[-1][0] if inside else (before[-1] if before else t0)
        if t1 - last > threshold or not math.isfinite(threshold):
            gaps.append([max(last, t0), t1])
        frame = frame[:-1]
    for a, b in zip(frame, frame[1:]):
        if b - a > threshold:
            gaps.append([max(a, t0), min(b, t1)])
    missing = sum(b - a for a, b in gaps)
    return {"joules": joules, "samples_in_window": len(inside), "samples": len(points),
            "mean_period_s": statistics.fmean(spacings) if spacings else None,
            "expected_period_s": period, "mode": mode, "rate_hz": 1 / period if period else None, "gaps": gaps, "coverage": max(0.0, 1 - missing / (t1 - t0)) if t1 > t0 else 0,
            "complete": not gaps}


def node_energy(records: list, metric: str, t0: float, t1: float, expected_period: float | None = None) -> dict:
    """One metric's energy over [t0, t1], summed over its series (e.g. several PSUs)."""
    found = series(records, metric)
    if not found:
        raise KwollectError(f"no {metric} sample for this node around the window")
    parts = [integrate(points, t0, t1, expected_period) for points in found.values()]
    joules = sum(p["joules"] for p in parts)
    gaps = [g for p in parts for g in p["gaps"]]
    periods = [p["mean_period_s"] for p in parts if p["mean_period_s"]]
    return {"joules": joules, "mean_power_w": joules / (t1 - t0) if t1 > t0 else None,
            "series": len(parts), "samples": sum(p["samples"] for p in parts),
            "samples_in_window": sum(p["samples_in_window"] for p in parts),
            "mean_period_s": statistics.fmean(periods) if periods else None,
            "expected_period_s": parts[0]["expected_period_s"], "mode": parts[0]["mode"],
            "rate_hz": parts[0]["rate_hz"], "gaps": gaps,
            "coverage": min(p["coverage"] for p in parts), "complete": not gaps}


def cell_window(result: dict, cell_dir: Path) -> tuple:
    """(t0, t1, source) of the measured window, in epoch seconds."""
    window = result.get("window") or {}
    if window.get("start_unix") is not None and window.get("end_unix") is not None:
        return float(window["start_unix"]), float(window["end_unix"]), "result.window"
    if window.get("start_utc") and window.get("end_utc"):
        return parse_time(window["start_utc"]), parse_time(window["end_utc"]), "result.window"
    emissions = cell_dir / "emissions.csv"
    if emissions.exists():  # codecarbon: the end, naive local time to the second, and the duration
        with open(emissions, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and rows[-1].get("timestamp") and rows[-1].get("duration"):
            end = datetime.fromisoformat(rows[-1]["timestamp"]).astimezone().timestamp()
            return end - float(rows[-1]["duration"]), end, "emissions.csv (1 s resolution)"
    if result.get("started_at") and result.get("finished_at"):
        return parse_time(result["started_at"]), parse_time(result["finished_at"]), "job (whole job, not the window)"
    raise KwollectError("result.json has no window times")


def cell_hosts(result: dict) -> dict:
    """{host: (t0, t1)} of a multi-host cell (#15: the window each host's workers saw), else {}."""
    hosts = {}
    for worker in (result.get("window") or {}).get("workers") or []:
        if worker.get("host") and worker.get("start_unix") is not None and worker.get("end_unix") is not None:
            t0, t1 = hosts.get(worker["host"], (worker["start_unix"], worker["end_unix"]))
            hosts[worker["host"]] = (min(t0, worker["start_unix"]), max(t1, worker["end_unix"]))
    return hosts if (result.get("parallel") or {}).get("hosts", 1) > 1 else {}


def annotate_nodes(cell_dir: Path, result: dict, hosts: dict, site: str, metrics: list, url: str, wait_s: float,
                   job_id, session, poll_s: float) -> dict:
    """A multi-host cell: each host's energy over its own window, in its `energy.nodes` record
    (`external.<label>`, with its source), and the cell's `energy.external.<label>`: their sum, or, when a
    host has no reading, `incomplete` with no sum (a partial sum would understate the cell)."""
    names = {host: host.split(".")[0] for host in hosts}
    t0, t1 = min(a for a, _ in hosts.values()), max(b for _, b in hosts.values())
    by_host = {n.get("host"): n for n in (result.get("energy") or {}).get("nodes") or []}
    software = (result.get("energy") or {}).get("total_joules")
    added, raw = {}, {"url": url, "site": site, "nodes": sorted(names.values()), "job_id": job_id, "window": [t0, t1],
                      "metrics": {}}
    deadline = time.monotonic() + wait_s
    for metric in metrics:
        label = LABELS.get(metric, metric)
        per_host, records = {}, []
        while True:
            try:
                records = fetch(url, site, [metric], t0 - MARGIN_S, t1 + MARGIN_S, nodes=sorted(names.values()),
                                job_id=job_id, session=session)
                error = None
            except KwollectError as exc:
                error = str(exc)
            for host, (a, b) in hosts.items():
                entry = {"metric": metric, "node": names[host], "source": label,
                         "window": {"start_unix": a, "end_unix": b, "source": "result.window.workers"}}
                mine = [r for r in records if str(r.get("device_id", "")).split(".")[0] == names[host]]
                try:
                    if error:
                        raise KwollectError(error)
                    entry.update(node_energy(mine, metric, a, b, EXPECTED_PERIOD_S.get(metric)))
                    entry["caught_up"] = max(parse_time(r["timestamp"]) for r in mine
                                             if r.get("metric_id") == metric) >= b
                except KwollectError as exc:
                    entry.update(joules=None, error=str(exc))
                per_host[host] = entry
            if all(e.get("caught_up") for e in per_host.values()) or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        missing = sorted(h for h, e in per_host.items() if e["joules"] is None)
        total = None if missing else sum(e["joules"] for e in per_host.values())
        for host, entry in per_host.items():
            entry.pop("caught_up", None)
            if host in by_host:
                by_host[host].setdefault("external", {})[label] = entry
        cell_entry = {"metric": metric, "source": label, "joules": total, "total_kind": "incomplete" if missing
                      else "measured", "missing_hosts": missing, "complete": not missing and all(
                          e.get("complete") for e in per_host.values()),
                      "nodes": {h: e["joules"] for h, e in sorted(per_host.items())},
                      "window": {"start_unix": t0, "end_unix": t1, "source": "result.window (per host)"},
                      "fetched_at": now_iso(), "ratio_to_software": total / software if total and software else None}
        if missing:
            cell_entry["error"] = (f"incomplete: no {metric} reading from host(s) {', '.join(missing)} "
                                   f"({'; '.join(per_host[h]['error'] for h in missing)}); no sum")
        if records:
            raw["metrics"][metric] = records
            period = next((e["expected_period_s"] for e in per_host.values() if e.get("expected_period_s")), None)
            cell_entry["gate"] = trace_external(cell_dir, result, records, metric, label, names[next(iter(hosts))],
                                                t0, t1, period)
        added[label] = cell_entry
    result.setdefault("energy", {}).setdefault("external", {}).update(added)
    atomic_write_json(cell_dir / RAW_FILE, raw)
    atomic_write_json(cell_dir / RESULT_FILE, result)
    return added


def annotate(cell_dir: Path, site: str, metrics: list, url: str = DEFAULT_URL, wait_s: float = 0.0,
             node: str | None = None, job_id=None, session=None, poll_s: float = 5.0) -> dict:
    """Add `energy.external.<label>` to a done cell's result.json (per host for a multi-host cell); returns it."""
    cell_dir = Path(cell_dir)
    result = read_json(cell_dir / RESULT_FILE)
    if result.get("status") != "done":
        return {}
    hosts = {} if node else cell_hosts(result)
    if hosts:
        return annotate_nodes(cell_dir, result, hosts, site, metrics, url, wait_s, job_id, session, poll_s)
    t0, t1, window_source = cell_window(result, cell_dir)
    node = (node or (result.get("host") or {}).get("hostname") or socket.gethostname()).split(".")[0]
    software = (result.get("energy") or {}).get("total_joules")
    added, raw = {}, {"url": url, "site": site, "node": node, "job_id": job_id, "window": [t0, t1], "metrics": {}}
    deadline = time.monotonic() + wait_s
    for metric in metrics:
        label = LABELS.get(metric, metric)
        query = {"nodes": [node], "metrics": [metric], "start": t0 - MARGIN_S, "end": t1 + MARGIN_S}
        entry = {"metric": metric, "node": node, "window": {"start_unix": t0, "end_unix": t1, "source": window_source},
                 "query": {"site": site, **query, "job_id": job_id}, "fetched_at": now_iso()}
        while True:
            try:
                records = fetch(url, site, [metric], query["start"], query["end"], nodes=[node], job_id=job_id,
                                session=session)
                energy = node_energy(records, metric, t0, t1, EXPECTED_PERIOD_S.get(metric))
                raw["metrics"][metric] = records
                entry.pop("error", None)
                entry.update(energy)
                last = max(parse_time(r["timestamp"]) for r in records if r.get("metric_id") == metric)
                if last >= t1:
                    break  # the data reaches past the window (Kwollect lags by a period or so)
            except KwollectError as exc:
                if "joules" in entry:
                    break  # keep what an earlier try got
                entry["error"] = str(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        if "error" in entry:
            entry["joules"] = None
        else:
            entry["ratio_to_software"] = entry["joules"] / software if software else None
        entry["source"] = label
        if metric in raw["metrics"]:
            entry["gate"] = trace_external(cell_dir, result, raw["metrics"][metric], metric, label, node, t0, t1,
                                           entry["expected_period_s"])
        added[label] = entry
    result.setdefault("energy", {}).setdefault("external", {}).update(added)
    atomic_write_json(cell_dir / RAW_FILE, raw)
    atomic_write_json(cell_dir / RESULT_FILE, result)
    return added


def trace_rows(records: list, metric: str, label: str, node: str) -> list:
    """trace.parquet rows (domain `node`) of one metric's samples; one device per series."""
    from jobs.meters.trace import NAN

    found = series(records, metric)
    rows = []
    for (device, labels), points in found.items():
        name = device or node
        if len(found) > 1 and labels != "{}":
            name += ":" + ",".join(f"{k}={v}" for k, v in sorted(json.loads(labels).items()))
        rows += [(t, "node", name, label, float(w), NAN, NAN, None) for t, w in points]
    return rows


def trace_external(cell_dir: Path, result: dict, records: list, metric: str, label: str, node: str,
                   t0: float, t1: float, period_s: float | None) -> dict:
    """Add the metric's samples to the cell's trace.parquet and judge them with the validity gate."""
    from jobs.meters.gate import domain_gate
    from jobs.meters.trace import TRACE_FILE, Trace, read_trace

    path = cell_dir / TRACE_FILE
    meta = result.get("trace") or {}
    trace = read_trace(path, meta) if path.exists() else Trace(margin_s=MARGIN_S)
    rows = trace_rows(records, metric, label, node)
    trace.rows = [r for r in trace.rows if not (r[1] == "node" and r[3] == label)] + rows  # rerun: replaced
    probes = [{"domain": "node", "device": d, "source": label, "counter": False, "counter_range_j": None}
              for d in sorted({r[2] for r in rows})]
    trace.probes = [p for p in trace.probes if not (p["domain"] == "node" and p["source"] == label)] + probes
    trace.write(path)
    result["trace"] = {**meta, **{k: v for k, v in trace.meta().items() if k != "period_s"},
                       "external": sorted({*meta.get("external", []), label})}
    return domain_gate(rows, probes, "node", label, t0, t1, period_s or 1.0, {})


def _cells(paths: list) -> list:
    found = []
    for path in map(Path, paths):
        if (path / "cells").is_dir():
            found += sorted(p for p in (path / "cells").iterdir() if (p / CELL_FILE).exists())
        else:
            found.append(path)
    return found


def _from_catalog(cell_dir: Path) -> tuple:
    from grid5000.launcher import power_metrics
    from orchestrator.nodes import node_types

    node_type = read_json(cell_dir / CELL_FILE)["params"]["node_type"]
    node = node_types().get(node_type)
    if node is None:
        return None, []
    return node.extra.get("site"), [m for m, _, _ in power_metrics(node)]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid5000.kwollect", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("annotate", help="add the node's Kwollect energy to done cells' result.json")
    p.add_argument("paths", nargs="+", help="cell folders, or campaign folders (all their done cells)")
    p.add_argument("--site", help="Grid'5000 site (default: from the node type)")
    p.add_argument("--metrics", help="comma list (default: the node type's node-level power metrics)")
    p.add_argument("--url", default=os.environ.get("KWOLLECT_URL", DEFAULT_URL), help="API root")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for data to reach the window's end")
    p.add_argument("--node", help="node name (default: the host in result.json)")
    p.add_argument("--job-id", help="OAR job id, for a job-scoped query (Kwollect then also filters on the job)")
    args = parser.parse_args(argv)
    failures = 0
    for cell_dir in _cells(args.paths):
        site, metrics = args.site, args.metrics.split(",") if args.metrics else None
        if not site or metrics is None:
            catalog_site, catalog_metrics = _from_catalog(cell_dir)
            site, metrics = site or catalog_site, metrics if metrics is not None else catalog_metrics
        if not site or not metrics:
            print(f"kwollect: {cell_dir.name}: no site or power metric known for this node type; skipped")
            continue
        try:
            added = annotate(cell_dir, site, metrics, url=args.url, wait_s=args.wait, node=args.node,
                             job_id=args.job_id)
        except (OSError, ValueError, KwollectError) as exc:
            failures += 1
            print(f"kwollect: {cell_dir.name}: {exc}")
            continue
        for label, entry in added.items():
            if entry.get("joules") is None:
                failures += 1
                print(f"kwollect: {cell_dir.name}: {label}: {entry.get('error')}")
            elif "nodes" in entry:  # a multi-host cell: the sum of its hosts' readings
                print(f"kwollect: {cell_dir.name}: {label} {entry['joules']:.1f} J over {len(entry['nodes'])} hosts ("
                      + ", ".join(f"{h}: {j:.1f} J" for h, j in entry["nodes"].items()) + ")")
            else:
                ratio = entry.get("ratio_to_software")
                print(f"kwollect: {cell_dir.name}: {label} {entry['joules']:.1f} J over "
                      f"{entry['window']['end_unix'] - entry['window']['start_unix']:.2f} s "
                      f"({entry['samples_in_window']} samples, coverage {entry['coverage']:.0%})"
                      + (f", {ratio:.2f}x the software estimate" if ratio else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
