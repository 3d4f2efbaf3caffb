"""GPU check for JAX and PyTorch, for the short-lived GPU machine (no network, JAX and PyTorch installed).

Two steps:
  here:  python bench/gpu_check.py prepare shared/gpu-wheels
         downloads the few wheels that machine lacks (Keras, codecarbon, nvidia-ml-py and their
         small dependencies; never numpy, JAX, PyTorch or CUDA wheels) into the folder;
  there: python bench/gpu_check.py run --wheels shared/gpu-wheels [--out docs/gpu-check.md]
         installs them (no index), then runs MobileNet-V2 and SRGAN, inference and training, on
         JAX and PyTorch, each as a real cell through the job entry point (`python -m jobs.run`),
         with the job's meters (NVML energy counter, NVML power polling, codecarbon side by side,
         idle baseline), while this script polls NVML utilisation. It checks that the window ran
         on the GPU (placement probe, and utilisation during the window) and that the counter and
         the polled power agree within --tolerance, and writes the comparison (date, GPU, driver,
         numbers) to --out. Exit 1 if a check fails.
         The evidence (#14), per cell, from its result.json: the power trace (trace.parquet: rows
         per source, GPU temperature and throttle reasons in the window), the validity gate's
         verdict, and the machine state at both window edges (GPU temperature, SM/memory clocks,
         power limit); a cell without a trace or a verdict fails the check. Then one more cell
         sets the power limit to --power-limit-fraction (80 %) of the current one through the
         matrix knob `gpu_power_limit_w` (NVML, needs root): the job reads it back, runs, and
         restores it; this script reads NVML again afterwards to confirm the restore. Where the
         limit may not be set (no root, a GPU without a settable limit) the refusal's reason is
         written down and is not a failure.
`run --cpu` does the same without a GPU (no GPU promised, no GPU checks; the power-limit cell is
refused, no NVIDIA GPU): how it is tested here.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's jobs/, whatever else is installed
CASES = [("mobilenet_v2", "1.1", "inference", [224, 224, 3], 50),
         ("mobilenet_v2", "1.2", "training", [224, 224, 3], 50),
         ("srgan", "10.1", "inference", [256, 256, 3], 10), ("srgan", "10.3", "training", [256, 256, 3], 5)]
TINY = {"mobilenet_v2": ([32, 32, 3], 2), "srgan": ([16, 16, 3], 2)}
BACKENDS = ("jax", "torch")
WHEELS = ["keras==3.15.1", "codecarbon==3.3.2", "nvidia-ml-py", "pyyaml"]
# Already on the GPU machine (or too big to carry): never downloaded.
SKIP = ("numpy", "scipy", "jax", "jaxlib", "torch", "nvidia_c", "nvidia_n", "triton", "sympy", "networkx",
        "setuptools", "pip")


def prepare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(folder),
                    *WHEELS], check=True)
    for wheel in folder.iterdir():
        if wheel.name.lower().startswith(SKIP) and not wheel.name.startswith("nvidia_ml_py"):
            wheel.unlink()
    size = sum(w.stat().st_size for w in folder.iterdir()) / 2**20
    print(f"{len(list(folder.iterdir()))} wheels, {size:.1f} MiB in {folder}")


def install(folder: Path) -> None:
    wheels = [str(w) for w in folder.glob("*.whl")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(folder),
                    *wheels], check=True)


class UtilisationPoller:
    """NVML GPU utilisation, 10 times a second, with timestamps (to pick the window's samples)."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no GPU: nothing to poll
            self._nvml = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.1):
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.samples.append((time.time(), util))

    def __enter__(self):
        if self._nvml:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def mean_between(self, start: float, end: float):
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None


def gpu_identity() -> dict:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {"gpu": pynvml.nvmlDeviceGetName(handle), "driver": pynvml.nvmlSystemGetDriverVersion()}
    except Exception:  # noqa: BLE001
        return {"gpu": None, "driver": None}


def power_limit_now() -> dict:
    """GPU 0's power limit, its settable range and the enforced limit (W), or {"error": why}, read now."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        return {"limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
                "enforced_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                "min_w": low / 1000.0, "max_w": high / 1000.0}
    except Exception as exc:  # noqa: BLE001 - no GPU, or a GPU without a settable limit
        return {"error": f"{type(exc).__name__}: {exc}"}


def evidence(folder: Path, result: dict) -> dict:
    """What the job recorded as evidence (#14): trace, gate verdict, GPU state at both window edges."""
    import pyarrow.parquet as pq

    trace_meta, energy, state = result.get("trace") or {}, result.get("energy") or {}, result.get("state") or {}
    out = {"trace_rows": None, "trace_sources": {}, "gate_valid": energy.get("valid"),
           "gate_reasons": energy.get("invalid_reasons"), "gpu_edges": {}}
    path = folder / str(trace_meta.get("file", "trace.parquet"))
    if path.is_file():
        table = pq.read_table(path).to_pydict()
        out["trace_rows"] = len(table["t_unix"])
        for source in table["source"]:
            out["trace_sources"][source] = out["trace_sources"].get(source, 0) + 1
        window = result["window"]
        inside = [i for i, t in enumerate(table["t_unix"]) if window["start_unix"] <= t <= window["end_unix"]]
        temps = [t for t in (table["temperature_c"][i] for i in inside) if t is not None and t == t]
        out["trace_gpu_temperature_c"] = [min(temps), max(temps)] if temps else None
        reasons = {table["throttle_reasons"][i] for i in inside if table["throttle_reasons"][i] is not None}
        out["trace_throttle_masks"] = sorted(reasons)
    for edge in ("start", "end"):
        gpus = (state.get(edge) or {}).get("gpus") or []
        if gpus:
            g = gpus[0]
            out["gpu_edges"][edge] = {k: g.get(k) for k in ("temperature_c", "sm_clock_mhz", "memory_clock_mhz",
                                                           "power_limit_w", "enforced_power_limit_w", "pstate",
                                                           "throttle_names")}
    return out


def power_limit_cell(root: Path, backend: str, args, env: dict) -> dict:
    """Set GPU 0's power limit to a fraction of the current one for one cell; check read-back and restore."""
    before = power_limit_now()
    target = None
    if "limit_w" in before:
        target = max(before["min_w"], round(before["limit_w"] * args.power_limit_fraction))
    folder = cell(root, backend, CASES[0], args, knob_w=target if target is not None else 100.0, suffix="-power-limit")
    subprocess.run([sys.executable, "-m", "jobs.run", str(folder)], env=env, cwd=ROOT, capture_output=True,
                   text=True, timeout=args.cell_timeout_s)
    result = json.loads((folder / "result.json").read_text())
    after = power_limit_now()
    record = {"before": before, "target_w": target, "after": after, "status": result.get("status")}
    if result.get("status") == "done":
        knob = (result.get("knobs") or {}).get("gpu_power_limit_w", {})
        record.update(knob=knob, evidence=evidence(folder, result),
                      throughput=result["window"]["throughput_samples_per_s"], total_j=result["energy"]["total_joules"])
        applied = list((knob.get("applied") or {}).values())
        restored = list((knob.get("restored") or {}).values())
        record["applied_ok"] = bool(applied) and all(abs(v - target) <= 1.0 for v in applied)
        record["restored_ok"] = (bool(restored) and "limit_w" in before and "limit_w" in after
                                 and all(abs(v - before["limit_w"]) <= 1.0 for v in restored)
                                 and abs(after["limit_w"] - before["limit_w"]) <= 1.0)
    else:
        message = (result.get("error") or {}).get("message", "")
        record["refused"] = message if "KnobRefused" in (result.get("error") or {}).get("type", "") or \
            "gpu_power_limit_w" in message else None
        record["error"] = message
        # Refused before anything changed, or failed after: either way the limit must be what it was.
        record["restored_ok"] = "limit_w" not in before or (
            "limit_w" in after and abs(after["limit_w"] - before["limit_w"]) <= 1.0)
    return record


def cell(root: Path, backend: str, case: tuple, args, knob_w: float | None = None, suffix: str = "") -> Path:
    test, subtest, phase, shape, batch = case
    if args.cpu:
        shape, batch = TINY[test]
    cid = f"{backend}-{test}-{phase}{suffix}"
    params = {"test": test, "subtest": subtest, "phase": phase, "node_type": "gpu-check", "backend": backend,
              "repetition": 0, "task": "classification" if test == "mobilenet_v2" else "enhancement",
              "batch_size": batch, "input_shape": shape, "precision": "fp32", "execution": None,
              "warmup_iterations": args.warmup, "duration_s": args.window_s, "iterations": None, "seed": 42}
    from jobs.backends import get_backend

    params["execution"] = get_backend(backend).default_execution
    if knob_w is not None:
        params["gpu_power_limit_w"] = knob_w  # the matrix knob (#14): set by the job, read back, restored
    folder = root / "cells" / cid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(json.dumps({
        "id": cid, "campaign": "gpu-check", "params": params,
        "energy": {"pue": 1.0, "carbon_intensity_g_per_kwh": 56.039, "country_iso_code": "FRA",
                   "idle_s": args.idle_s, "idle_reuse_s": 3600, "min_window_node_s": 60, "min_window_gpu_s": 10,
                   "nvml_poll_hz": 20, "trace_period_s": 0.1, "trace_margin_s": 1.0},
        "node": {"name": "gpu-check", "gpu_count": 0 if args.cpu else 1}}))
    return folder


def run(args) -> int:
    if args.wheels:
        install(Path(args.wheels))
    root = Path(args.work)
    rows, failures = [], []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with UtilisationPoller() as poller:
        for backend in args.backends:
            for case in CASES:
                folder = cell(root, backend, case, args)
                done = subprocess.run([sys.executable, "-m", "jobs.run", str(folder)], env=env, cwd=ROOT,
                                      capture_output=True, text=True, timeout=args.cell_timeout_s)
                result = json.loads((folder / "result.json").read_text())
                label = f"{backend} {case[0]} {case[2]}"
                if result.get("status") != "done":
                    failures.append(f"{label}: {result.get('error', {}).get('message')}")
                    rows.append({"label": label, "status": "failed"})
                    continue
                window, energy, devices = result["window"], result["energy"], result["devices"]
                gpu = energy["domains"].get("gpu")
                alternatives = {a["source"]: a["joules"] for a in energy["alternatives"].get("gpu", [])}
                sources = {} if gpu is None else {gpu["source"]: gpu["joules"], **alternatives}
                utilisation = poller.mean_between(window["start_unix"], window["end_unix"])
                row = {"label": label, "status": "done", "device": devices["compute_device"],
                       "execution": devices["execution"], "throughput": window["throughput_samples_per_s"],
                       "window_s": window["duration_s"], "iterations": window["iterations"],
                       "gpu_sources": sources, "utilisation": utilisation,
                       "idle_w": None if gpu is None else gpu.get("idle_w"),
                       "total_j": energy["total_joules"], "kind": energy["total_kind"],
                       "cpu_source": energy["domains"].get("cpu", {}).get("source"),
                       "evidence": evidence(folder, result)}
                rows.append(row)
                if not row["evidence"]["trace_rows"] or row["evidence"]["gate_valid"] is None:
                    failures.append(f"{label}: no power trace or no gate verdict in the result")
                if not args.cpu:
                    if "cuda" not in str(row["device"]).lower() and "gpu" not in str(row["device"]).lower():
                        failures.append(f"{label}: the window ran on {row['device']}, not the GPU")
                    if utilisation is None or utilisation < args.min_utilisation:
                        failures.append(f"{label}: NVML utilisation {utilisation} % during the window")
                    if not any(k.startswith("nvml") for k in row["evidence"]["trace_sources"]):
                        failures.append(f"{label}: the trace holds no NVML row")
                    if set(row["evidence"]["gpu_edges"]) != {"start", "end"}:
                        failures.append(f"{label}: no GPU state (clocks, temperature, power limit) at both edges")
                    counter, polled = sources.get("nvml-counter"), sources.get("nvml-power")
                    if counter and polled and abs(counter - polled) / counter > args.tolerance:
                        failures.append(f"{label}: counter {counter:.1f} J and polled {polled:.1f} J differ by more "
                                        f"than {args.tolerance:.0%}")
                print(json.dumps(row), flush=True)
    limit = None
    if args.power_limit_fraction:
        limit = power_limit_cell(root, args.backends[0], args, env)
        print(json.dumps({"power_limit": limit}), flush=True)
        if not limit["restored_ok"]:
            failures.append(f"power limit not restored: before {limit['before']}, after {limit['after']}")
        if limit["status"] == "done" and not limit.get("applied_ok"):
            failures.append(f"power limit {limit['target_w']} W not read back as applied: {limit.get('knob')}")
        if limit["status"] != "done" and not limit.get("refused"):
            failures.append(f"power-limit cell failed, not refused: {limit.get('error')}")
    write_report(Path(args.out), rows, failures, args, limit)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _edges(ev: dict, key: str, unit: str = "") -> str:
    start, end = (ev.get("gpu_edges", {}).get(e, {}).get(key) for e in ("start", "end"))
    return "-" if start is None and end is None else f"{start}→{end}{unit}"


def write_report(path: Path, rows: list, failures: list, args, limit: dict | None = None) -> None:
    ident = gpu_identity()
    lines = [f"# GPU check: JAX and PyTorch on {ident['gpu'] or 'no GPU (CPU run: mechanics only)'}", "",
             f"Date (UTC): {datetime.now(timezone.utc).isoformat(timespec='seconds')}; driver: {ident['driver']}; "
             f"windows of {args.window_s:g} s after {args.warmup} warm-up iterations; produced by "
             "`bench/gpu_check.py run`. Energy sources: nvml-counter (measured), nvml-power (measured, polled), "
             "codecarbon (its own NVML reading); idle power from the job's idle baseline.", "",
             "| cell | device | execution | samples/s | iterations | GPU J per source | GPU idle W | "
             "GPU util % | total J (kind) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "done":
            lines.append(f"| {r['label']} | failed | | | | | | | |")
            continue
        sources = ", ".join(f"{k} {v:.1f}" for k, v in r["gpu_sources"].items()) or "no GPU domain"
        util = "-" if r["utilisation"] is None else f"{r['utilisation']:.0f}"
        idle = "-" if r["idle_w"] is None else f"{r['idle_w']:.1f}"
        lines.append(f"| {r['label']} | {r['device']} | {r['execution']} | {r['throughput']:.2f} | {r['iterations']} "
                     f"| {sources} | {idle} | {util} | {r['total_j']:.1f} ({r['kind']}) |")
    lines += ["", "## Evidence (#14): trace, gate, GPU state at the window's edges (start→end)", "",
              "| cell | trace rows (per source) | GPU °C in window (trace) | throttle masks | gate | "
              "GPU °C | SM MHz | memory MHz | power limit W |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "done":
            continue
        ev = r["evidence"]
        per_source = ", ".join(f"{k} {v}" for k, v in sorted(ev["trace_sources"].items())) or "-"
        gate = "valid" if ev["gate_valid"] else f"invalid: {'; '.join(ev['gate_reasons'] or [])}"
        lines.append(f"| {r['label']} | {ev['trace_rows']} ({per_source}) | {ev.get('trace_gpu_temperature_c') or '-'} "
                     f"| {ev.get('trace_throttle_masks') or '-'} | {gate} | {_edges(ev, 'temperature_c')} | "
                     f"{_edges(ev, 'sm_clock_mhz')} | {_edges(ev, 'memory_clock_mhz')} | "
                     f"{_edges(ev, 'power_limit_w')} |")
    if limit is not None:
        lines += ["", f"## Power limit: set to {args.power_limit_fraction:.0%} of the current one, then restored", ""]
        lines.append(f"Before: {limit['before']}; target: {limit['target_w']} W; after the cell: {limit['after']}.")
        if limit["status"] == "done":
            knob = limit.get("knob") or {}
            lines.append(f"Set and read back: {knob.get('applied')} (ok: {limit.get('applied_ok')}); restored: "
                         f"{knob.get('restored')} (ok: {limit.get('restored_ok')}); throughput "
                         f"{limit['throughput']:.2f} samples/s, {limit['total_j']:.1f} J; GPU state at the edges: "
                         f"power limit {_edges(limit['evidence'], 'power_limit_w')} W, SM clock "
                         f"{_edges(limit['evidence'], 'sm_clock_mhz')} MHz.")
        else:
            lines.append(f"Not set on this machine: {limit.get('refused') or limit.get('error')} "
                         f"(limit unchanged: {limit['restored_ok']}).")
    lines += ["", f"Counter vs polled tolerance: {args.tolerance:.0%}.",
              "Checks: " + ("all passed." if not failures else "; ".join(failures))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("prepare")
    p.add_argument("folder")
    p = verbs.add_parser("run")
    p.add_argument("--wheels")
    p.add_argument("--out", default=str(ROOT / "docs" / "gpu-check.md"))
    p.add_argument("--work", default="/tmp/gpu-check")
    p.add_argument("--backends", nargs="*", default=list(BACKENDS))
    p.add_argument("--window-s", type=float, default=15.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--min-utilisation", type=float, default=50.0)
    p.add_argument("--cell-timeout-s", type=float, default=150.0)
    p.add_argument("--power-limit-fraction", type=float, default=0.8,
                   help="one more cell at this fraction of GPU 0's power limit, restored after (0: skip)")
    p.add_argument("--cpu", action="store_true", help="no GPU: tiny inputs, no GPU promised, no GPU checks")
    args = parser.parse_args()
    if args.verb == "prepare":
        prepare(Path(args.folder))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
