"""A cell's evidence, in the order run_cell needs it: load, knobs, trace, state, then the verdict.

    evidence = CellEvidence(cell, meters)
    evidence.check_load()          before the idle baseline: other tenants (warning, or refusal if strict)
    evidence.begin()               after it: set the knobs, start the trace (warm-up gives the front margin)
    evidence.window_opens()        right before meters.start(): machine state at the start
    evidence.window_closed(window) right after meters.stop(): state at the end, the back margin, knobs restored
    evidence.close()               in run_cell's `finally`, before meters.close(): restores whatever is left
    evidence.into(result, cell_dir) trace.parquet, the gate verdict, the uncertainty, state and knobs

Settings come from the cell's `energy` section, all optional: trace_period_s, trace_margin_s,
strict (refuse a busy node), gate {min_coverage, max_gap_s, max_temperature_drift_c}.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from jobs.meters import knobs as knob_control
from jobs.meters.gate import gate
from jobs.meters.state import load_before, machine_state
from jobs.meters.trace import DEFAULT_MARGIN_S, DEFAULT_PERIOD_S, TRACE_FILE, TraceRecorder
from jobs.meters.uncertainty import energy_uncertainty


class CellEvidence:
    def __init__(self, cell: dict, meters):
        self.config = cell.get("energy") or {}
        self.params = cell.get("params") or {}
        self.nvml, self.handles = meters.nvml()
        self.margin_s = float(self.config.get("trace_margin_s", DEFAULT_MARGIN_S))
        self.recorder = TraceRecorder(meters.trace_probes(), float(self.config.get("trace_period_s",
                                                                                   DEFAULT_PERIOD_S)), self.margin_s)
        self.state, self.knobs, self.trace = {}, {}, None
        self._knobs = contextlib.ExitStack()

    def check_load(self) -> None:
        self.state["load_before"] = load_before(nvml=self.nvml, handles=self.handles,
                                                strict=bool(self.config.get("strict", False)))

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
        energy["notes"] = list(energy.get("notes") or []) + list(self.state.get("load_before", {}).get("warnings", []))
        result.update(state=self.state, trace=trace.meta(), knobs=self.knobs)
        return result

    def gpu_model(self) -> str | None:
        for gpu in (self.state.get("start") or {}).get("gpus") or []:
            if gpu.get("name"):
                return gpu["name"]
        return None
