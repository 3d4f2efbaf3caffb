"""Calibration against a wattmeter (Grid'5000 Kwollect): each software meter's ratio to the wall, per node type.

    benchmark-tracker calibrate run --node-type sirius [--site lyon] [--repetitions 3] [--window-s 60]
        [--loads auto|idle,half,full,gpu] [--gpu-backend tensorflow|jax|torch]
        [--metric wattmetre_power_watt] [--store results/calibrations] [--url API] [--wait S]
    benchmark-tracker calibrate apply <campaign folder>... [--store results/calibrations]

`run` (on a reserved node with a wattmeter, whole node, ideally `-t monitor=wattmetre_power_watt`)
measures, `repetitions` times, three windows: idle, half the cores busy, all cores busy, and on a
node with a GPU a fourth, `gpu`: a Keras matmul loop on every visible GPU (`--loads auto`, the
default; `--loads idle,gpu` picks; asking for `gpu` where NVML sees no GPU, or where the Keras
backend cannot use one, is refused with the reason before anything is measured). Each window runs
under the job's own meters (RAPL, NVML, codecarbon) and, afterwards, the node's wattmeter over the
same window from Kwollect. Per software meter (and for `total`, the per-domain choice result.json
reports) it stores the ratio software / wattmeter: mean, 95 % t-interval (none from n < 3), per
load, and the fit wall = a x software + b, with the date, as `<store>/<node type>.json`.

`apply` adds `energy.calibrated` to the done cells of a campaign whose node type has a
calibration: the wall-equivalent energy total_joules / ratio, labelled `calibrated` with the
calibration's date and interval. The raw reading is never replaced.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from jobs.records import CELL_FILE, RESULT_FILE, atomic_write_json, now_iso, read_json

DEFAULT_STORE = Path("results") / "calibrations"
CPU_LOADS = ("idle", "half", "full")
LOADS = CPU_LOADS + ("gpu",)
FORMAT_VERSION = 1
GPU_MATRIX = 8192  # fp32 matmuls of this size keep any data-centre GPU busy; 256 MiB per operand


class GpuLoadRefused(RuntimeError):
    """A GPU load step was asked for where it cannot run; the message says why."""


# --- the loads --------------------------------------------------------------------------

def _spin(until: float) -> None:
    x = 0
    while time.time() < until:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def run_load(load: str, seconds: float, cores: int | None = None) -> None:
    """Hold `load` for `seconds`: idle sleeps; half/full spin that share of the usable cores."""
    cores = cores or len(os.sched_getaffinity(0))
    workers = {"idle": 0, "half": max(1, cores // 2), "full": cores}[load]
    until = time.time() + seconds
    processes = [multiprocessing.Process(target=_spin, args=(until,), daemon=True) for _ in range(workers)]
    for process in processes:
        process.start()
    time.sleep(max(0.0, until - time.time()))
    for process in processes:
        process.join(timeout=5)


def visible_gpus() -> tuple:
    """(GPU indices NVML sees within CUDA_VISIBLE_DEVICES, why none) on this node."""
    try:
        import pynvml

        from jobs.meters.nvml import visible_indices

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver, no library: no GPU to load
        return [], f"no NVIDIA GPU on this node (NVML unavailable: {exc})"
    try:
        indices = visible_indices(pynvml, pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # noqa: BLE001
        return [], f"NVML answered but listed no GPU ({exc})"
    finally:
        pynvml.nvmlShutdown()
    return indices, None if indices else "NVML sees no GPU in CUDA_VISIBLE_DEVICES"


def plan(loads: str, repetitions: int, gpus: list, why_no_gpu: str | None = None) -> tuple:
    """(steps [{repetition, load}], notes): each load once per repetition, repetition-major.

    `loads` is `auto` (the CPU loads, plus `gpu` where there is one) or a comma list of LOADS;
    an unknown load, or `gpu` without a GPU, raises GpuLoadRefused (bad input: nothing measured).
    """
    notes = []
    if loads == "auto":
        names = list(CPU_LOADS) + (["gpu"] if gpus else [])
        if not gpus:
            notes.append(f"no GPU load step: {why_no_gpu or 'no GPU'}")
    else:
        names = [n.strip() for n in loads.split(",") if n.strip()]
        unknown = [n for n in names if n not in LOADS]
        if unknown or not names:
            raise GpuLoadRefused(f"unknown load(s) {', '.join(unknown) or '(none given)'}; loads: {', '.join(LOADS)}")
        if "gpu" in names and not gpus:
            raise GpuLoadRefused(f"refusing the gpu load: {why_no_gpu or 'no GPU'}")
    return [{"repetition": r, "load": n} for r in range(repetitions) for n in names], notes


class GpuLoad:
    """A matmul loop on the visible GPUs through Keras (one backend), synced every few products.

    `prepare()` imports the framework, checks it sees a GPU (else GpuLoadRefused, with the reason),
    allocates the operands and compiles/warms up outside any window; then `load(seconds)`.
    """

    def __init__(self, backend: str = "tensorflow", size: int = GPU_MATRIX):
        self.backend, self.size, self._step = backend, size, None

    def prepare(self) -> dict:
        from jobs import backends

        backends.select_backend(self.backend)
        seen = backends.gpus_seen()
        if not seen:
            raise GpuLoadRefused(f"refusing the gpu load: Keras' {self.backend} backend sees no GPU (a CPU build "
                                 "of the framework? see docs/backends.md)")
        import numpy as np
        from keras import ops

        rng = np.random.default_rng(0)
        a = backends.to_device(rng.standard_normal((self.size, self.size), dtype=np.float32) / self.size ** 0.5)
        b = backends.to_device(rng.standard_normal((self.size, self.size), dtype=np.float32) / self.size ** 0.5)
        state = {"a": a}

        def step():
            for _ in range(4):  # normalised products: no overflow however long it runs
                state["a"] = ops.matmul(state["a"], b)
            float(ops.convert_to_numpy(state["a"][0, 0]))  # a host read: waits for the queued work

        for _ in range(3):  # compilation and allocation happen here, never in a window
            step()
        self._step = step
        return {"backend": self.backend, "gpus": seen, "matrix": self.size,
                "device": backends.placement(state["a"])}

    def load(self, seconds: float) -> None:
        until = time.time() + seconds
        while time.time() < until:
            self._step()


def measure_windows(meters, repetitions: int, window_s: float, loads=CPU_LOADS, load=run_load,
                    steps: list | None = None) -> list:
    """Each load `repetitions` times under the software meters: [{load, repetition, window, software}].

    `steps` (from plan()) replaces loads x repetitions when given.
    """
    runs = []
    steps = steps or [{"repetition": r, "load": n} for r in range(repetitions) for n in loads]
    for step in steps:
        repetition, name = step["repetition"], step["load"]
        start = time.time()
        meters.start()
        load(name, window_s)
        energy = meters.stop()
        end = time.time()
        software = {"total": sum(d.joules for d in energy.domains.values())}
        for domain in energy.domains.values():
            software[domain.via] = software.get(domain.via, 0.0) + domain.joules
        for alternatives in energy.alternatives.values():
            for alternative in alternatives:
                software[alternative["via"]] = software.get(alternative["via"], 0.0) + alternative["joules"]
        runs.append({"load": name, "repetition": repetition, "start_unix": start, "end_unix": end,
                     "software_j": software,
                     "sources": {n: d.source for n, d in sorted(energy.domains.items())}})
    return runs


def add_wattmeter(runs: list, records: list, metric: str) -> list:
    """Each run's wattmeter energy over its own window, from Kwollect records."""
    from grid5000.kwollect import EXPECTED_PERIOD_S, node_energy

    for run in runs:
        energy = node_energy(records, metric, run["start_unix"], run["end_unix"], EXPECTED_PERIOD_S.get(metric))
        run["wattmeter_j"], run["wattmeter_complete"] = energy["joules"], energy["complete"]
        run["wattmeter_coverage"] = energy["coverage"]
    return runs


# --- the computation ----------------------------------------------------------------------

def t_interval(values: list, confidence: float = 0.95):
    """(mean, [low, high]) with Student's t; the interval is None from fewer than 3 values."""
    mean = statistics.fmean(values)
    if len(values) < 3:
        return mean, None
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, [mean - half, mean + half]


def fit_line(xs: list, ys: list):
    """Least squares y = a x + b, or None without 3 points of distinct x."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {"a": a, "b": my - a * mx}


def compute(runs: list, node_type: str, metric: str, calibrated_at: str | None = None) -> dict:
    """Per software meter: ratio software / wattmeter over complete windows, interval, per load, fit."""
    usable = [r for r in runs if r.get("wattmeter_j") and r.get("wattmeter_complete")]
    meters = sorted({m for r in usable for m in r["software_j"]})
    out = {}
    for meter in meters:
        pairs = [(r["software_j"][meter], r["wattmeter_j"], r["load"]) for r in usable if meter in r["software_j"]]
        ratios = [s / w for s, w, _ in pairs]
        mean, interval = t_interval(ratios)
        by_load = {}
        for load in sorted({p[2] for p in pairs}):
            load_mean, load_interval = t_interval([s / w for s, w, name in pairs if name == load])
            by_load[load] = {"ratio": load_mean, "ci95": load_interval,
                             "n": len([p for p in pairs if p[2] == load])}
        out[meter] = {"ratio": mean, "ci95": interval, "n": len(ratios), "by_load": by_load,
                      "fit_wall_vs_software": fit_line([s for s, _, _ in pairs], [w for _, w, _ in pairs])}
    return {"format": FORMAT_VERSION, "node_type": node_type, "calibrated_at": calibrated_at or now_iso(),
            "wattmeter_metric": metric, "runs_used": len(usable), "runs_left_out": len(runs) - len(usable),
            "meters": out, "runs": runs}


def store(calibration: dict, folder: Path) -> Path:
    path = Path(folder) / f"{calibration['node_type']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, calibration)
    return path


def calibrated_figure(energy: dict, calibration: dict, meter: str = "total") -> dict | None:
    """`energy.calibrated`: the wall-equivalent of the raw total, beside it, never instead of it."""
    entry = (calibration.get("meters") or {}).get(meter)
    if not entry or not entry.get("ratio") or energy.get("total_joules") is None:
        return None
    raw = energy["total_joules"]
    interval = entry.get("ci95")
    return {"label": "calibrated", "joules": raw / entry["ratio"], "raw_joules": raw, "meter": meter,
            "ratio": entry["ratio"], "ratio_ci95": interval,
            "joules_ci95": sorted([raw / interval[1], raw / interval[0]]) if interval and min(interval) > 0 else None,
            "calibrated_at": calibration["calibrated_at"], "node_type": calibration["node_type"],
            "wattmeter_metric": calibration["wattmeter_metric"], "n": entry["n"]}


def apply(campaign: Path, folder: Path) -> dict:
    """Add `energy.calibrated` to every done cell whose node type has a calibration; {cell: figure}."""
    done = {}
    for cell_dir in sorted((Path(campaign) / "cells").iterdir()):
        try:
            result = read_json(cell_dir / RESULT_FILE)
            node_type = read_json(cell_dir / CELL_FILE)["params"]["node_type"]
        except (OSError, ValueError, KeyError):
            continue
        path = Path(folder) / f"{node_type}.json"
        if result.get("status") != "done" or not path.exists():
            continue
        figure = calibrated_figure(result.get("energy") or {}, read_json(path))
        if figure:
            result["energy"]["calibrated"] = figure
            atomic_write_json(cell_dir / RESULT_FILE, result)
            done[cell_dir.name] = figure
    return done


# --- the verb -------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from grid5000.kwollect import DEFAULT_URL, KwollectError, fetch
    from jobs.meters import build_meters

    site = args.site or _site(args.node_type)
    if not site:
        print(f"calibrate: no Grid'5000 site known for node type {args.node_type}; give --site")
        return 2
    node = (args.node or socket.gethostname()).split(".")[0]
    gpus, why_no_gpu = visible_gpus()
    try:  # bad input is refused before anything is measured
        steps, notes = plan(args.loads, args.repetitions, gpus, why_no_gpu)
        gpu_load, gpu_info = None, None
        if any(step["load"] == "gpu" for step in steps):
            gpu_load = GpuLoad(args.gpu_backend)
            gpu_info = gpu_load.prepare()
            print(f"calibrate: gpu load ready: {gpu_info}")
    except GpuLoadRefused as exc:
        print(f"calibrate: {exc}")
        return 2
    for note in notes:
        print(f"calibrate: {note}")

    def load(name: str, seconds: float) -> None:
        if name == "gpu":
            gpu_load.load(seconds)
        else:
            run_load(name, seconds)

    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"calibrate-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    meters = build_meters(folder, {"id": "calibration", "campaign": f"calibrate-{args.node_type}"},
                          {"country_iso_code": "FRA", "carbon_intensity_g_per_kwh": 56.039, "nvml_poll_hz": 20})
    try:
        runs = measure_windows(meters, args.repetitions, args.window_s, load=load, steps=steps)
    finally:
        meters.close()
    time.sleep(args.wait)  # Kwollect lags by a period or so
    try:
        records = fetch(args.url or DEFAULT_URL, site, [args.metric], runs[0]["start_unix"] - 30,
                        runs[-1]["end_unix"] + 30, nodes=[node])
    except KwollectError as exc:
        print(f"calibrate: {exc}")
        return 1
    calibration = compute(add_wattmeter(runs, records, args.metric), args.node_type, args.metric,
                          datetime.now(timezone.utc).isoformat())
    calibration["loads"] = {"steps": [step["load"] for step in steps if step["repetition"] == 0], "gpu": gpu_info,
                            "notes": notes}
    path = store(calibration, Path(args.store))
    for meter, entry in calibration["meters"].items():
        interval = entry["ci95"]
        print(f"calibrate: {args.node_type} {meter}: software/wall {entry['ratio']:.3f}"
              + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else " (no interval: n < 3)")
              + f" over {entry['n']} windows")
    print(f"calibrate: wrote {path}")
    return 0 if calibration["runs_used"] else 1


def cmd_apply(args) -> int:
    for campaign in args.campaigns:
        done = apply(Path(campaign), Path(args.store))
        print(f"calibrate: {campaign}: {len(done)} cell(s) got a calibrated figure")
    return 0


def _site(node_type: str):
    from orchestrator.nodes import node_types

    node = node_types().get(node_type)
    return node.extra.get("site") if node is not None else None


def add_parser(verbs) -> None:
    """The `calibrate` verb of benchmark-tracker (orchestrator/cli.py registers it through this)."""
    p = verbs.add_parser("calibrate", help="software meters vs the node's wattmeter (Grid'5000), per node type")
    sub = p.add_subparsers(dest="calibrate_verb", required=True)
    r = sub.add_parser("run", help="idle and two loads, several repetitions, on this node; store the ratios")
    r.add_argument("--node-type", required=True)
    r.add_argument("--site", help="Grid'5000 site (default: the node type's)")
    r.add_argument("--node", help="node name (default: this host)")
    r.add_argument("--repetitions", type=int, default=3)
    r.add_argument("--window-s", type=float, default=60.0)
    r.add_argument("--loads", default="auto",
                   help=f"auto (idle, half, full, and gpu where NVML sees a GPU) or a comma list of {', '.join(LOADS)}")
    r.add_argument("--gpu-backend", default="tensorflow", choices=("tensorflow", "jax", "torch"),
                   help="the Keras backend that runs the gpu load's matmul loop")
    r.add_argument("--metric", default="wattmetre_power_watt")
    r.add_argument("--store", default=str(DEFAULT_STORE))
    r.add_argument("--url", help="Kwollect API root (default: the Grid'5000 API)")
    r.add_argument("--wait", type=float, default=10.0, help="seconds to let Kwollect catch up before fetching")
    r.set_defaults(func=cmd_run)
    a = sub.add_parser("apply", help="add energy.calibrated to a campaign's done cells (raw kept)")
    a.add_argument("campaigns", nargs="+")
    a.add_argument("--store", default=str(DEFAULT_STORE))
    a.set_defaults(func=cmd_apply)


def main(argv: list | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m grid5000")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["calibrate", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
