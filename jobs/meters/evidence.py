"""A cell's evidence, in the order run_cell needs it: load, knobs, trace, state, then the verdict.

    evidence = CellEvidence(cell, meters)
    evidence.check_load()          before the idle baseline: other tenants (warning, or refusal if strict)
    evidence.cool_down(campaign)   then, if the sweep asks (`cooldown: {band_c, max_s}`): wait, bounded,
                                   until the node's temperatures are back near its idle baseline's
    evidence.begin()               after it: set the knobs, start the trace (warm-up gives the front margin)
    evidence.window_opens()        right before meters.start(): machine state at the start
    evidence.window_closed(window) right after meters.stop(): state at the end, the back margin, knobs restored
    evidence.close()               in run_cell's `finally`, before meters.close(): restores whatever is left
    evidence.into(result, cell_dir) trace.parquet, the gate verdict, the uncertainty, state and knobs

Settings come from the cell's `energy` section, all optional: trace_period_s, trace_margin_s,
strict (refuse a busy node), gate {min_coverage, max_gap_s, max_temperature_drift_c}; and from
its `cooldown` section (the sweep's top-level `cooldown:`), optional: band_c, max_s.

The cooldown runs here, in the job on the node, so every launcher (local, Slurm, OAR) gets it.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from jobs.meters import knobs as knob_control
from jobs.meters.gate import gate
from jobs.meters.state import SYS, load_before, machine_state, node_temperatures, wait_until_cool
from jobs.meters.trace import DEFAULT_MARGIN_S, DEFAULT_PERIOD_S, TRACE_FILE, TraceRecorder
from jobs.meters.uncertainty import energy_uncertainty


COOLDOWN_POLL_S = 2.0


class CellEvidence:
    def __init__(self, cell: dict, meters, sys_root=SYS):
        self.config = cell.get("energy") or {}
        self.cooldown_settings = cell.get("cooldown") or None
        self.sys_root = sys_root
        self.params = cell.get("params") or {}
        self.nvml, self.handles = meters.nvml()
        self.margin_s = float(self.config.get("trace_margin_s", DEFAULT_MARGIN_S))
        self.recorder = TraceRecorder(meters.trace_probes(), float(self.config.get("trace_period_s",
                                                                                   DEFAULT_PERIOD_S)), self.margin_s)
        self.state, self.knobs, self.trace = {}, {}, None
        self.cooldown, self.warnings, self.notes = None, [], []
        self._knobs = contextlib.ExitStack()

    def check_load(self) -> None:
        self.state["load_before"] = load_before(nvml=self.nvml, handles=self.handles,
                                                strict=bool(self.config.get("strict", False)))

    def cool_down(self, campaign_dir: Path, poll_s: float = COOLDOWN_POLL_S) -> dict | None:
        """Wait until this host's temperatures are within band_c of its idle baseline's, at most max_s.

        Recorded as result.json `cooldown`: the temperatures waited for (baseline_c, band_c), those
        at the start and those reached, the seconds waited. A band not reached after max_s is a
        warning (energy.warnings) and a note; a node without a sensor, or without a baseline yet
        (the first cell on a host measures it), records why and proceeds.
        """
        settings = self.cooldown_settings
        if not settings:
            return None
        from jobs.idle import cooldown_baseline

        band, max_s = float(settings["band_c"]), float(settings["max_s"])
        record = {"band_c": band, "max_s": max_s}
        read = lambda: node_temperatures(self.nvml, self.handles, self.sys_root)  # noqa: E731
        now = read()
        baseline = cooldown_baseline(campaign_dir)
        if not now:
            record.update(status="not measurable (no sensor)", measurable=False, waited_s=0.0)
            self.notes.append("cooldown: not measurable (no sensor): no thermal zone, hwmon or GPU temperature "
                              "on this node; the window started without a temperature check")
        elif not baseline:
            record.update(status="no idle baseline yet", measurable=True, waited_s=0.0, start_c=now)
        else:
            waited = wait_until_cool(baseline, band, max_s, read=read, poll_s=poll_s)
            if waited["cooled"] is None:  # sensors, but none the baseline recorded
                status = "not measurable (no sensor in common with the idle baseline)"
                record.update(status=status, measurable=False, waited_s=0.0, baseline_c=baseline)
                self.notes.append(f"cooldown: {status}; the window started without a temperature check")
            else:
                record.update(status="cooled" if waited["cooled"] else "band not reached", measurable=True,
                              baseline_c={k: baseline[k] for k in waited["start_c"]}, start_c=waited["start_c"],
                              reached_c=waited["reached_c"], waited_s=round(waited["waited_s"], 3),
                              over_c=waited["over"])
                if not waited["cooled"]:
                    worst = max(waited["over"], key=waited["over"].get)
                    message = (f"cooldown: band not reached: after {max_s:g} s, {len(waited['over'])} sensor(s) "
                               f"still more than {band:g} C above the idle baseline ({worst} "
                               f"+{waited['over'][worst]:g} C); the window started warmer than idle")
                    self.warnings.append(message)
                    self.notes.append(message)
        self.cooldown = record
        return record

    def begin(self) -> None:
        wanted = knob_control.requested(self.params)
        if wanted:
            self.knobs = self._knobs.enter_context(knob_control.applied_knobs(wanted, self.nvml, self.handles))
        self.recorder.start()

    def window_opens(self) -> None:
        self.state["start"] = machine_state(self.nvml, self.handles)

    def window_closed(self, window: dict) -> None:
        self.state["end"] = machine_state(self.nvml, self.handles)
        time.sleep(max(0.0, window["end_unix"] + self.margin_s - time.time()))  # the back margin
        self.trace = self.recorder.stop()
        self._knobs.close()

    def close(self) -> None:
        self.recorder.stop()
        self._knobs.close()

    def into(self, result: dict, cell_dir: Path) -> dict:
        """Write trace.parquet; add the verdict and uncertainty to result['energy'], and state/trace/knobs."""
        energy, window = result["energy"], result["window"]
        t0, t1 = window["start_unix"], window["end_unix"]
        trace = (self.trace or self.recorder.stop()).clipped(t0, t1)
        trace.write(Path(cell_dir) / TRACE_FILE)
        chosen = {name: domain["source"] for name, domain in energy["domains"].items()}
        verdict = gate(trace, t0, t1, chosen, self.config.get("gate"), self.state)
        energy["uncertainty"] = energy_uncertainty(energy["domains"], window["duration_s"], self.gpu_model())
        energy.update(valid=verdict["valid"], invalid_reasons=verdict["invalid_reasons"], gate=verdict["gate"])
        # Reported, not failed: the telemetry is sound, the conditions are worth knowing.
        energy["warnings"] = list(self.warnings)
        energy["notes"] = (list(energy.get("notes") or []) + list(self.state.get("load_before", {}).get("warnings", []))
                           + self.notes)
        result.update(state=self.state, trace=trace.meta(), knobs=self.knobs)
        if self.cooldown is not None:
            result["cooldown"] = self.cooldown
        return result

    def gpu_model(self) -> str | None:
        for gpu in (self.state.get("start") or {}).get("gpus") or []:
            if gpu.get("name"):
                return gpu["name"]
        return None
