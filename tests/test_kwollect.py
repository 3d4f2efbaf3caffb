"""Kwollect: fetch a node's power over a window from a local HTTP server speaking Kwollect's format,
integrate it to joules, and add it to result.json as a labelled source; errors and gaps included."""
from __future__ import annotations

import base64
import json
import math
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from grid5000 import kwollect

PARIS_WINTER = timezone(timedelta(hours=1))
PERIOD_S = {"wattmetre_power_watt": 1.0, "bmc_node_power_watt": 5.0, "pdu_outlet_power_watt": 1.0}


def kwollect_timestamp(t: float) -> str:
    """As Kwollect prints them: ISO 8601, microseconds, the database's zone (Europe/Paris)."""
    return datetime.fromtimestamp(t, PARIS_WINTER).isoformat(timespec="microseconds")


class FakeKwollect:
    """`GET /sites/<site>/metrics` on 127.0.0.1, answering like Kwollect (through the Grid'5000 API).

    Power is `watts[metric]` (a number or a function of time), sampled on multiples of the metric's period.
    Sites: `broken` answers 500 with the API's statement-timeout message; `secure` wants basic auth.
    Nodes whose name contains `gappy` miss their samples in `gap` (epoch seconds); nodes whose name contains
    `dark` have no sample at all (a node whose BMC does not answer). Samples newer than
    `time() - lag_s` do not exist yet, as on the real service.
    """

    def __init__(self, watts=None, gap=None, lag_s: float = 0.0, clock=None):
        import time

        self.watts = watts or {"bmc_node_power_watt": 100.0, "wattmetre_power_watt": 120.0}
        self.gap, self.lag_s, self.clock = gap, lag_s, clock or time.time
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization")})
                status, body = fake.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stable/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, auth):
        url = urlparse(path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["stable", "sites"] or parts[3] != "metrics":
            return 404, {"code": 404, "message": f"Not Found: {url.path}", "title": "Not Found"}
        site = parts[2]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if site == "broken":
            return 500, {"code": 500, "message": "Request timeout, too much data to process",
                         "title": "Internal Server Error"}
        if site == "secure" and not (auth and base64.b64decode(auth.split()[1]) == b"alice:s3cret"):
            return 401, {"code": 401, "message": "Unauthorized", "title": "Unauthorized"}
        if not any(k in query for k in ("nodes", "devices", "job_id")):
            return 400, {"code": 400, "message": "nodes, devices or job_id is required", "title": "Bad Request"}
        start, end = float(query["start_time"]), float(query["end_time"])
        newest = self.clock() - self.lag_s
        records = []
        for metric in query["metrics"].split(","):
            period = PERIOD_S.get(metric, 1.0)
            for node in query.get("nodes", "node-1").split(","):
                if "dark" in node:
                    continue
                t = math.ceil(start / period) * period
                while t <= min(end, newest):
                    if not ("gappy" in node and self.gap and self.gap[0] < t < self.gap[1]):
                        watts = self.watts[metric]
                        value = watts(t) if callable(watts) else watts
                        labels = {"_device_orig": [f"wattmetrev3-1-port{n}" for n in (12, 13)]} \
                            if metric == "wattmetre_power_watt" else {}
                        records.append({"timestamp": kwollect_timestamp(t), "device_id": node, "metric_id": metric,
                                        "value": value, "labels": labels})
                    t += period
        records.sort(key=lambda r: r["timestamp"])
        return 200, records


@pytest.fixture
def fake():
    with FakeKwollect() as server:
        yield server


def done_cell(folder: Path, t0: float, t1: float, software_j: float = 50.0, host: str = "grele-3.nancy.grid5000.fr"):
    folder.mkdir(parents=True, exist_ok=True)
    result = {"status": "done", "host": {"hostname": host},
              "window": {"start_unix": t0, "end_unix": t1, "duration_s": t1 - t0},
              "energy": {"total_joules": software_j, "domains": {}}}
    (folder / "result.json").write_text(json.dumps(result))
    return folder


# --- integration, no server ------------------------------------------------------------

def test_integrate_constant_power_is_power_times_duration():
    points = [(float(t), 100.0) for t in range(0, 61, 5)]
    out = kwollect.integrate(points, 12.0, 47.5, expected_period=5.0)
    assert out["joules"] == pytest.approx(100.0 * 35.5)
    assert out["complete"] and out["gaps"] == [] and out["coverage"] == 1


def test_integrate_ramp_is_exact_between_samples_and_clipped_to_the_window():
    points = [(float(t), float(t)) for t in range(0, 11)]  # P(t) = t W
    out = kwollect.integrate(points, 2.5, 7.5, expected_period=1.0)
    assert out["joules"] == pytest.approx((7.5 ** 2 - 2.5 ** 2) / 2)
    assert out["samples_in_window"] == 5


def test_integrate_flags_a_gap_and_the_missing_edges():
    points = [(float(t), 50.0) for t in range(0, 101) if not 40 < t < 60]
    out = kwollect.integrate(points, 10.0, 90.0, expected_period=1.0)
    assert out["gaps"] == [[40.0, 60.0]] and not out["complete"]
    assert out["coverage"] == pytest.approx(0.75)
    late = kwollect.integrate([(float(t), 50.0) for t in range(30, 101)], 10.0, 90.0, expected_period=1.0)
    assert late["gaps"] == [[10.0, 30.0]]


def test_series_sum_the_psus_and_ignore_device_orig_and_nulls():
    records = [
        {"timestamp": "2025-04-18T18:55:30+02:00", "device_id": "n-1", "metric_id": "bmc_psu_power_watt",
         "value": 60, "labels": {"psu": "1"}},
        {"timestamp": "2025-04-18T18:55:30+02:00", "device_id": "n-1", "metric_id": "bmc_psu_power_watt",
         "value": 40, "labels": {"psu": "2"}},
        {"timestamp": "2025-04-18T18:55:35+02:00", "device_id": "n-1", "metric_id": "bmc_psu_power_watt",
         "value": None, "labels": {"psu": "2"}},
    ]
    assert len(kwollect.series(records, "bmc_psu_power_watt")) == 2
    t = kwollect.parse_time("2025-04-18T18:55:30+02:00")
    out = kwollect.node_energy(records, "bmc_psu_power_watt", t, t + 10, expected_period=5.0)
    assert out["series"] == 2 and out["joules"] == pytest.approx(1000.0)


def test_times_with_offsets_and_epochs_agree():
    assert kwollect.parse_time("2025-04-18T18:55:33.754307+02:00") == pytest.approx(1744995333.754307)
    assert kwollect.parse_time("2025-04-18T16:55:33.754307Z") == pytest.approx(1744995333.754307)
    assert kwollect.parse_time(1744995333.5) == 1744995333.5


# --- against the local Kwollect ----------------------------------------------------------

def test_annotate_adds_labelled_bmc_and_wattmeter_energy_with_ratio(tmp_path, fake):
    t0 = 1_795_000_000.25
    cell = done_cell(tmp_path / "cell", t0, t0 + 42.0, software_j=2100.0)
    added = kwollect.annotate(cell, "lyon", ["wattmetre_power_watt", "bmc_node_power_watt"], url=fake.url)
    result = json.loads((cell / "result.json").read_text())
    external = result["energy"]["external"]
    assert set(external) == {"wattmeter", "bmc"} and added == external
    assert external["bmc"]["joules"] == pytest.approx(100.0 * 42.0)
    assert external["wattmeter"]["joules"] == pytest.approx(120.0 * 42.0)
    assert external["bmc"]["ratio_to_software"] == pytest.approx(4200.0 / 2100.0)
    assert external["bmc"]["source"] == "bmc" and external["bmc"]["complete"]
    assert external["bmc"]["window"]["source"] == "result.window"
    assert result["energy"]["total_joules"] == 2100.0  # the software estimate is kept, not replaced
    # The query: the short node name, both ends as epoch seconds with a margin, exact metric names.
    query = parse_qs(urlparse(fake.requests[0]["path"]).query)
    assert query["nodes"] == ["grele-3"] and query["metrics"] == ["wattmetre_power_watt"]
    assert float(query["start_time"][0]) == pytest.approx(t0 - 30) and "+" not in fake.requests[0]["path"]
    raw = json.loads((cell / "kwollect.json").read_text())
    assert raw["metrics"]["bmc_node_power_watt"][0]["metric_id"] == "bmc_node_power_watt"


def multi_host_cell(folder: Path, t0: float, hosts: list) -> Path:
    """A merged multi-host result (#15): each host's worker window (host 2 starts 0.5 s later), one node record each."""
    folder.mkdir(parents=True)
    workers = [{"worker": i, "host": h, "start_unix": t0 + i / 2, "end_unix": t0 + 20 + i / 2}
               for i, h in enumerate(hosts)]
    result = {"status": "done", "host": {"hostname": hosts[0]}, "parallel": {"hosts": len(hosts)},
              "window": {"start_unix": t0, "end_unix": t0 + 20.5, "workers": workers},
              "energy": {"total_joules": 300.0, "nodes": [{"host": h, "worker": i, "domains": {}}
                                                          for i, h in enumerate(hosts)]}}
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_each_host_of_a_multi_host_cell_gets_its_own_reading_and_a_missing_one_makes_it_incomplete(tmp_path, fake):
    t0 = 1_795_000_000.0
    both = multi_host_cell(tmp_path / "both", t0, ["grele-1.nancy.grid5000.fr", "grele-2.nancy.grid5000.fr"])
    bmc = kwollect.annotate(both, "nancy", ["bmc_node_power_watt"], url=fake.url)["bmc"]
    assert parse_qs(urlparse(fake.requests[0]["path"]).query)["nodes"] == ["grele-1,grele-2"]  # one query
    assert bmc["joules"] == pytest.approx(2 * 100.0 * 20) and bmc["total_kind"] == "measured" and bmc["complete"]
    nodes = json.loads((both / "result.json").read_text())["energy"]["nodes"]
    for node, start in zip(nodes, (t0, t0 + 0.5)):  # each host over the window it saw, with its source
        entry = node["external"]["bmc"]
        assert entry["joules"] == pytest.approx(100.0 * 20) and entry["source"] == "bmc"
        assert entry["window"]["start_unix"] == start and entry["node"] == node["host"].split(".")[0]
    part = multi_host_cell(tmp_path / "part", t0, ["grele-1.nancy.grid5000.fr", "dark-2.nancy.grid5000.fr"])
    bmc = kwollect.annotate(part, "nancy", ["bmc_node_power_watt"], url=fake.url)["bmc"]
    assert bmc["joules"] is None and bmc["total_kind"] == "incomplete"  # never the one host's 2000 J as the sum
    assert bmc["missing_hosts"] == ["dark-2.nancy.grid5000.fr"] and "no bmc_node_power_watt sample" in bmc["error"]
    assert bmc["nodes"] == {"dark-2.nancy.grid5000.fr": None, "grele-1.nancy.grid5000.fr": pytest.approx(2000.0)}


def test_a_gap_in_the_data_is_reported_not_hidden(tmp_path):
    t0 = 1_795_000_000.0
    with FakeKwollect(gap=(t0 + 10, t0 + 30)) as fake:
        cell = done_cell(tmp_path / "cell", t0, t0 + 40, host="gappy-1")
        external = kwollect.annotate(cell, "nancy", ["bmc_node_power_watt"], url=fake.url)
    bmc = external["bmc"]
    assert not bmc["complete"] and bmc["gaps"] == [[t0 + 10, t0 + 30]]
    assert bmc["joules"] == pytest.approx(100.0 * 40)  # constant power: interpolation across the gap is exact


def test_server_errors_are_recorded_with_their_message_and_the_result_kept(tmp_path, fake):
    cell = done_cell(tmp_path / "cell", 1_795_000_000.0, 1_795_000_060.0)
    external = kwollect.annotate(cell, "broken", ["bmc_node_power_watt"], url=fake.url)
    assert external["bmc"]["joules"] is None
    assert "HTTP 500: Request timeout, too much data to process" in external["bmc"]["error"]
    assert json.loads((cell / "result.json").read_text())["status"] == "done"


def test_no_samples_is_an_error_not_zero_joules(tmp_path, fake):
    cell = done_cell(tmp_path / "cell", 1_795_000_000.0, 1_795_000_060.0)
    external = kwollect.annotate(cell, "nancy", ["pdu_outlet_power_watt"], url=fake.url.replace("/stable/", "/x/"))
    assert external["pdu"]["joules"] is None and "HTTP 404" in external["pdu"]["error"]
    fake.watts["bmc_node_power_watt"] = None  # a metric that answers nothing usable
    external = kwollect.annotate(cell, "nancy", ["bmc_node_power_watt"], url=fake.url)
    assert external["bmc"]["joules"] is None and "no bmc_node_power_watt sample" in external["bmc"]["error"]


def test_credentials_come_from_the_environment_and_are_never_printed(tmp_path, fake, monkeypatch, capsys):
    cell = done_cell(tmp_path / "cell", 1_795_000_000.0, 1_795_000_010.0)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("G5K_USER", raising=False)
    monkeypatch.delenv("G5K_PASSWORD", raising=False)
    refused = kwollect.annotate(cell, "secure", ["bmc_node_power_watt"], url=fake.url)
    assert "HTTP 401" in refused["bmc"]["error"] and "G5K_USER" in refused["bmc"]["error"]
    monkeypatch.setenv("G5K_USER", "alice")
    monkeypatch.setenv("G5K_PASSWORD", "s3cret")
    code = kwollect.main(["annotate", str(cell), "--site", "secure", "--metrics", "bmc_node_power_watt",
                          "--url", fake.url])
    out = capsys.readouterr().out
    assert code == 0 and "bmc 1000.0 J" in out
    everything = out + (cell / "result.json").read_text() + (cell / "kwollect.json").read_text()
    assert "s3cret" not in everything


def test_waits_for_kwollect_to_catch_up_with_the_window_end(tmp_path):
    clock = {"now": 1_795_000_020.0}
    with FakeKwollect(clock=lambda: clock["now"]) as fake:
        cell = done_cell(tmp_path / "cell", 1_795_000_000.0, 1_795_000_030.0)
        # The first answer stops 10 s before the window's end; then the data arrives.
        original = fake.answer

        def answer(path, auth):
            status, body = original(path, auth)
            clock["now"] = 1_795_000_100.0
            return status, body

        fake.answer = answer
        external = kwollect.annotate(cell, "nancy", ["bmc_node_power_watt"], url=fake.url, wait_s=5, poll_s=0.1)
    assert len(fake.requests) == 2 and external["bmc"]["complete"]
    assert external["bmc"]["joules"] == pytest.approx(3000.0)


def test_window_falls_back_to_codecarbon_then_to_the_job(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "emissions.csv").write_text("timestamp,project_name,duration\n2026-11-27T01:07:58,x,1.5\n")
    t0, t1, source = kwollect.cell_window({"window": {}}, cell)
    assert t1 - t0 == pytest.approx(1.5) and source.startswith("emissions.csv")
    (cell / "emissions.csv").unlink()
    t0, t1, source = kwollect.cell_window({"started_at": "2026-11-27T01:07:13.687+00:00",
                                           "finished_at": "2026-11-27T01:07:58.680+00:00"}, cell)
    assert source.startswith("job") and t1 - t0 == pytest.approx(44.993)


def test_cli_reads_site_and_metrics_from_the_catalog_for_a_campaign(tmp_path, fake, capsys):
    campaign = tmp_path / "campaign"
    cell = done_cell(campaign / "cells" / "abc", 1_795_000_000.0, 1_795_000_020.0, software_j=1000.0)
    (cell / "cell.json").write_text(json.dumps({"params": {"node_type": "sirius"}}))
    assert kwollect.main(["annotate", str(campaign), "--url", fake.url]) == 0
    external = json.loads((cell / "result.json").read_text())["energy"]["external"]
    assert set(external) == {"wattmeter", "bmc"}  # sirius: wattmeter (1 s) and BMC (5 s)
    assert "/sites/lyon/metrics" in fake.requests[0]["path"]


# --- 50 Hz on-demand wattmeter, traces and the gate --------------------------------------

DATA = Path(__file__).parent / "data" / "kwollect"


def test_recorded_50hz_wattmeter_is_judged_at_its_own_rate():
    """A 0.3 s dropout in a 50 Hz answer is a gap; against the default 1 s period it would vanish."""
    records = json.loads((DATA / "wattmetre_50hz.json").read_text())
    t0 = 1_795_000_010.5
    out = kwollect.node_energy(records, "wattmetre_power_watt", t0, t0 + 4.0,
                               kwollect.EXPECTED_PERIOD_S["wattmetre_power_watt"])
    assert out["mode"] == "high-rate" and out["rate_hz"] == pytest.approx(50.0, rel=1e-3)
    assert out["expected_period_s"] == pytest.approx(0.02, rel=1e-3)
    assert len(out["gaps"]) == 1 and out["gaps"][0][0] == pytest.approx(t0 + 1.5, abs=0.021)
    assert not out["complete"] and 0.9 < out["coverage"] < 0.95
    assert out["mean_power_w"] == pytest.approx(1480.0, abs=40)
    default = kwollect.node_energy([r for r in records if r["timestamp"].endswith(".000000+01:00")],
                                   "wattmetre_power_watt", t0, t0 + 4.0, 1.0)  # one sample a second
    assert default["mode"] == "default" and default["expected_period_s"] == 1.0


def test_annotate_writes_a_trace_and_a_gate_verdict_for_a_50hz_wattmeter(tmp_path, monkeypatch):
    monkeypatch.setitem(PERIOD_S, "wattmetre_power_watt", 0.02)  # the job asked for -t monitor=...
    t0 = 1_795_000_000.0
    with FakeKwollect(gap=(t0 + 3.0, t0 + 3.5)) as fake:
        cell = done_cell(tmp_path / "cell", t0, t0 + 6.0, software_j=500.0, host="gappy-2")
        external = kwollect.annotate(cell, "lyon", ["wattmetre_power_watt"], url=fake.url)
    wattmeter = external["wattmeter"]
    assert wattmeter["mode"] == "high-rate" and wattmeter["joules"] == pytest.approx(120.0 * 6.0)
    gate = wattmeter["gate"]
    assert not gate["valid"] and gate["longest_gap_s"] == pytest.approx(0.52, abs=0.03)
    assert any("cover" in r for r in gate["reasons"])  # 0.5 s of 6 s missing: coverage 92 %
    import pyarrow.parquet as pq

    table = pq.read_table(cell / "trace.parquet").to_pydict()
    assert set(table["source"]) == {"wattmeter"} and set(table["domain"]) == {"node"}
    assert set(table["device"]) == {"gappy-2"} and len(table["t_unix"]) > 60 * 50  # the ±30 s margin too
    assert min(table["t_unix"]) < t0 < t0 + 6 < max(table["t_unix"])
    result = json.loads((cell / "result.json").read_text())
    assert result["trace"]["external"] == ["wattmeter"] and result["trace"]["samples"] == len(table["t_unix"])
    # Annotating again replaces the wattmeter rows, never duplicates them.
    with FakeKwollect() as fake:
        kwollect.annotate(cell, "lyon", ["wattmetre_power_watt"], url=fake.url)
    fetched = json.loads((cell / "kwollect.json").read_text())["metrics"]["wattmetre_power_watt"]
    assert len(pq.read_table(cell / "trace.parquet")) == len(fetched) > len(table["t_unix"])  # gap filled in


# --- calibration against the wattmeter ------------------------------------------------------

def test_calibration_ratio_interval_and_fit_on_recorded_50hz_data():
    from grid5000 import calibrate

    records = json.loads((DATA / "wattmetre_50hz.json").read_text())
    t0 = 1_795_000_010.0
    windows = [(t0 + 0.1 + 0.4 * i, t0 + 0.4 + 0.4 * i) for i in range(4)] + [(t0 + 1.9, t0 + 2.5)]  # last: the gap
    runs = [{"load": ("idle", "half", "full", "half", "full")[i], "repetition": i, "start_unix": a, "end_unix": b,
             "software_j": {"total": 0.0}} for i, (a, b) in enumerate(windows)]
    runs = calibrate.add_wattmeter(runs, records, "wattmetre_power_watt")
    for i, run in enumerate(runs):  # software reads 60 % of the wall, +/- a little
        run["software_j"] = {"total": run["wattmeter_j"] * (0.6 + 0.01 * (i % 2)), "codecarbon": 5.0}
    out = calibrate.compute(runs, "orion", "wattmetre_power_watt", "2026-12-01T22:00:00+00:00")
    assert out["runs_used"] == 4 and out["runs_left_out"] == 1  # the window over the dropout is not used
    total = out["meters"]["total"]
    assert total["ratio"] == pytest.approx(0.605) and total["n"] == 4
    assert total["ci95"][0] < 0.605 < total["ci95"][1] and total["ci95"][1] - total["ci95"][0] < 0.03
    assert total["by_load"]["idle"]["ci95"] is None  # no interval from n < 3
    assert out["meters"]["codecarbon"]["fit_wall_vs_software"] is None  # constant software: no fit
    assert out["calibrated_at"] == "2026-12-01T22:00:00+00:00" and out["node_type"] == "orion"


def test_calibrate_run_on_this_node_then_apply_beside_the_raw_figure(tmp_path, capsys):
    """The verb end to end: real loads and real codecarbon here, the wattmeter from the local Kwollect."""
    from grid5000 import calibrate

    with FakeKwollect(watts={"wattmetre_power_watt": 150.0}) as fake:
        code = calibrate.main(["run", "--node-type", "orion", "--site", "lyon", "--node", "orion-3",
                               "--repetitions", "3", "--window-s", "0.4", "--store", str(tmp_path / "cal"),
                               "--url", fake.url, "--wait", "0"])
    assert code == 0, capsys.readouterr().out
    stored = json.loads((tmp_path / "cal" / "orion.json").read_text())
    assert {r["load"] for r in stored["runs"]} == {"idle", "half", "full"} and len(stored["runs"]) == 9
    total = stored["meters"]["total"]
    assert total["n"] == stored["runs_used"] >= 3 and total["ci95"] is not None
    run = stored["runs"][0]
    assert run["wattmeter_j"] == pytest.approx(150.0 * (run["end_unix"] - run["start_unix"]), rel=1e-6)
    assert "software/wall" in capsys.readouterr().out

    campaign = tmp_path / "campaign"
    cell = done_cell(campaign / "cells" / "abc", 1_795_000_000.0, 1_795_000_020.0, software_j=1000.0)
    (cell / "cell.json").write_text(json.dumps({"params": {"node_type": "orion"}}))
    other = done_cell(campaign / "cells" / "def", 1_795_000_000.0, 1_795_000_020.0, software_j=1000.0)
    (other / "cell.json").write_text(json.dumps({"params": {"node_type": "grele"}}))  # not calibrated
    assert calibrate.main(["apply", str(campaign), "--store", str(tmp_path / "cal")]) == 0
    energy = json.loads((cell / "result.json").read_text())["energy"]
    assert energy["total_joules"] == 1000.0  # the raw figure stays
    calibrated = energy["calibrated"]
    assert calibrated["label"] == "calibrated" and calibrated["calibrated_at"] == stored["calibrated_at"]
    assert calibrated["joules"] == pytest.approx(1000.0 / total["ratio"])
    low, high = calibrated["joules_ci95"]
    assert low < calibrated["joules"] < high
    assert "calibrated" not in json.loads((other / "result.json").read_text())["energy"]
