"""Power traces: every sampler's timestamped readings over the window plus a margin, per domain and device.

A TraceRecorder runs one thread that, every `period_s`, asks each probe for
one reading and stamps it with `time.time()` (epoch seconds, the clock of
result.json `window.start_unix/end_unix`). Probes come from the meters
(`trace_probes()`): a RAPL zone, an NVML device's power and its energy
counter, codecarbon's model. The recorder is independent of the meters'
window accounting, so it can start before the window (warm-up) and run past
it: the margin shows the edges.

Rows (trace.parquet): t_unix, domain, device, source, power_w, energy_j
(the counter's raw reading in joules where the meter is a counter, NaN
otherwise: a wrap or a reset shows as a drop), temperature_c and
throttle_reasons (NVML devices; NaN / null elsewhere). A failed read makes
no row; the recorder counts it per device.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("t_unix", "domain", "device", "source", "power_w", "energy_j", "temperature_c", "throttle_reasons")
TRACE_FILE = "trace.parquet"
DEFAULT_PERIOD_S = 0.1
DEFAULT_MARGIN_S = 1.0
NAN = float("nan")


@dataclass
class Probe:
    """One device's reading: `read()` returns {power_w?, energy_j?, temperature_c?, throttle_reasons?, t?}
    (`t`: when the probe read it, if it timed its own read for a power from counter deltas).

    `counter_range_j`: where the counter wraps (RAPL's max_energy_range_uj), None when it never
    should (NVML's 64-bit mJ counter): the gate tells wraps from resets with it.
    """

    domain: str
    device: str
    source: str
    read: object  # callable
    counter_range_j: float | None = None
    counter: bool = False

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.device}/{self.source}"


@dataclass
class Trace:
    rows: list = field(default_factory=list)  # tuples in COLUMNS order
    probes: list = field(default_factory=list)  # [{domain, device, source, counter, counter_range_j}]
    failed_reads: dict = field(default_factory=dict)  # probe key -> count
    period_s: float = DEFAULT_PERIOD_S
    margin_s: float = DEFAULT_MARGIN_S

    def clipped(self, start_unix: float, end_unix: float) -> "Trace":
        """The rows in [start - margin, end + margin]."""
        low, high = start_unix - self.margin_s, end_unix + self.margin_s
        rows = [r for r in self.rows if low <= r[0] <= high]
        return Trace(rows, self.probes, self.failed_reads, self.period_s, self.margin_s)

    def meta(self) -> dict:
        return {"file": TRACE_FILE, "samples": len(self.rows), "margin_s": self.margin_s,
                "period_s": self.period_s, "probes": self.probes, "failed_reads": self.failed_reads}

    def write(self, path: Path) -> None:
        """trace.parquet, atomically (a temporary beside it, then renamed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        columns = list(zip(*self.rows)) if self.rows else [[] for _ in COLUMNS]
        schema = pa.schema([("t_unix", pa.float64()), ("domain", pa.string()), ("device", pa.string()),
                            ("source", pa.string()), ("power_w", pa.float64()), ("energy_j", pa.float64()),
                            ("temperature_c", pa.float64()), ("throttle_reasons", pa.int64())])
        table = pa.table({name: list(values) for name, values in zip(COLUMNS, columns)}, schema=schema)
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary)
        temporary.replace(path)


def read_trace(path: Path, meta: dict | None = None) -> Trace:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pydict()
    rows = [tuple(_nan(table[c][i]) if c in ("power_w", "energy_j", "temperature_c") else table[c][i]
                  for c in COLUMNS) for i in range(len(table["t_unix"]))]
    meta = meta or {}
    return Trace(rows, list(meta.get("probes", [])), dict(meta.get("failed_reads", {})),
                 meta.get("period_s", DEFAULT_PERIOD_S), meta.get("margin_s", DEFAULT_MARGIN_S))


def _nan(value):
    return NAN if value is None else value


def row(t: float, probe: Probe, reading: dict) -> tuple:
    reasons = reading.get("throttle_reasons")
    return (t, probe.domain, probe.device, probe.source, float(reading.get("power_w", NAN)),
            float(reading.get("energy_j", NAN)), float(reading.get("temperature_c", NAN)),
            None if reasons is None else int(reasons))


class TraceRecorder:
    """One sampling thread over the probes of every meter; `stop()` returns the Trace."""

    def __init__(self, probes: list, period_s: float = DEFAULT_PERIOD_S, margin_s: float = DEFAULT_MARGIN_S):
        self.probes, self.period_s, self.margin_s = list(probes), period_s, margin_s
        self.trace = Trace([], [{"domain": p.domain, "device": p.device, "source": p.source,
                                 "counter": p.counter, "counter_range_j": p.counter_range_j}
                                for p in self.probes], {}, period_s, margin_s)
        self._stop = threading.Event()
        self._thread = None

    def sample(self) -> None:
        for probe in self.probes:
            try:
                reading = probe.read()
            except Exception:  # noqa: BLE001 - a device that stops answering is evidence, not a crash
                self.trace.failed_reads[probe.key] = self.trace.failed_reads.get(probe.key, 0) + 1
                continue
            if reading is None:
                continue
            self.trace.rows.append(row(reading.get("t") or time.time(), probe, reading))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def start(self) -> None:
        if self.probes and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trace-recorder", daemon=True)
            self._thread.start()

    def stop(self) -> Trace:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.sample()  # the last reading, after the window
        return self.trace


def power_from_counter(previous: tuple | None, t: float, energy_j: float, range_j: float | None) -> float:
    """Mean power since the previous (t, energy) read of a counter; one wrap corrected; NaN at first."""
    if previous is None or t <= previous[0]:
        return NAN
    delta = energy_j - previous[1]
    if delta < 0:
        if range_j is None:
            return NAN  # a reset: no power from it
        delta += range_j
    return delta / (t - previous[0])


def is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
