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
`run --cpu` does the same without a GPU (no GPU promised, no GPU checks): how it is tested here.
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


def cell(root: Path, backend: str, case: tuple, args) -> Path:
    test, subtest, phase, shape, batch = case
    if args.cpu:
        shape, batch = TINY[test]
    cid = f"{backend}-{test}-{phase}"
    params = {"test": test, "subtest": subtest, "phase": phase, "node_type": "gpu-check", "backend": backend,
              "repetition": 0, "task": "classification" if test == "mobilenet_v2" else "enhancement",
              "batch_size": batch, "input_shape": shape, "precision": "fp32", "execution": None,
              "warmup_iterations": args.warmup, "duration_s": args.window_s, "iterations": None, "seed": 42}
    from jobs.backends import get_backend

    params["execution"] = get_backend(backend).default_execution
    folder = root / "cells" / cid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(json.dumps({
        "id": cid, "campaign": "gpu-check", "params": params,
        "energy": {"pue": 1.0, "carbon_intensity_g_per_kwh": 56.039, "country_iso_code": "FRA",
                   "idle_s": args.idle_s, "idle_reuse_s": 3600, "min_window_node_s": 60, "min_window_gpu_s": 10,
                   "nvml_poll_hz": 20},
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
                       "cpu_source": energy["domains"].get("cpu", {}).get("source")}
                rows.append(row)
                if not args.cpu:
                    if "cuda" not in str(row["device"]).lower() and "gpu" not in str(row["device"]).lower():
                        failures.append(f"{label}: the window ran on {row['device']}, not the GPU")
                    if utilisation is None or utilisation < args.min_utilisation:
                        failures.append(f"{label}: NVML utilisation {utilisation} % during the window")
                    counter, polled = sources.get("nvml-counter"), sources.get("nvml-power")
                    if counter and polled and abs(counter - polled) / counter > args.tolerance:
                        failures.append(f"{label}: counter {counter:.1f} J and polled {polled:.1f} J differ by more "
                                        f"than {args.tolerance:.0%}")
                print(json.dumps(row), flush=True)
    write_report(Path(args.out), rows, failures, args)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def write_report(path: Path, rows: list, failures: list, args) -> None:
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
    p.add_argument("--cpu", action="store_true", help="no GPU: tiny inputs, no GPU promised, no GPU checks")
    args = parser.parse_args()
    if args.verb == "prepare":
        prepare(Path(args.folder))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
