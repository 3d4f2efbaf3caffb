"""Benchmarks of the Slurm launcher against the test cluster (tests/clusters/slurm-up.sh).

    python bench/bench_slurm.py                 # both, 1,000 and 10,000 cells
    python bench/bench_slurm.py --submit-cells 200 --status-cells 10000

1. Submission: N cells as job arrays vs one job per cell (ratio, goal <= 0.1).
   Jobs are submitted held (`hold: true`), so nothing runs, then cancelled.
2. `benchmark-tracker status` over 10,000 cells (goal <= 5 s), the real CLI in a fresh
   process: 8,000 cells with a final status and 2,000 queued (held) in Slurm, so that the
   batched scheduler query has real jobs to look at.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["BENCHMARK_TRACKER_NODE_TYPES"] = str(ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml")

from jobs.records import update_status  # noqa: E402
from orchestrator import lifecycle  # noqa: E402
from orchestrator.launchers import pick_launcher  # noqa: E402
from orchestrator.matrix import expand  # noqa: E402
from orchestrator.progress import Progress  # noqa: E402
from orchestrator.spec import parse_sweep  # noqa: E402
from orchestrator.store import Campaign  # noqa: E402
from orchestrator.sweep import cell_record  # noqa: E402

SWEEP = """
name: {name}
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
  repetitions: {n}
  node_types: [slurm-local]
defaults: {{batch_size: 2, input_size: [32, 32], execution: eager, warmup_iterations: 1, iterations: 2}}
launcher: slurm
timeout_s: 300
slurm:
  hold: true
  array_parallelism: 4
  use_arrays: {arrays}
"""


def make_campaign(folder: Path, name: str, n: int, arrays: bool):
    text = SWEEP.format(name=name, n=n, arrays="true" if arrays else "false")
    path = folder / f"{name}.yaml"
    path.write_text(text)
    spec = parse_sweep(text, path)
    cells = expand(spec).cells
    campaign = Campaign(folder / "results" / name)
    campaign.root.mkdir(parents=True)
    campaign.freeze_sweep(text)
    campaign.write_manifest(name, text, "slurm", cells)
    for cell in cells:
        campaign.write_cell(cell, cell_record(spec.sweep, cell))
    return spec, campaign, cells


def submit(folder: Path, name: str, n: int, arrays: bool) -> tuple:
    spec, campaign, cells = make_campaign(folder, name, n, arrays)
    launcher = pick_launcher(spec)
    launcher.check(cells)
    clock = time.perf_counter()
    lifecycle.launch(campaign, launcher, cells, Progress(n, io.StringIO()))
    return time.perf_counter() - clock, launcher, campaign, cells


def bench_submission(folder: Path, n: int) -> None:
    results = {}
    for arrays in (True, False):
        seconds, launcher, campaign, cells = submit(folder, f"submit-{'arrays' if arrays else 'single'}", n, arrays)
        results[arrays] = seconds
        lifecycle.cancel(campaign, launcher, cells)
        print(f"submit {n} cells {'as arrays   ' if arrays else 'one by one  '}: {seconds:8.2f} s "
              f"({seconds / n * 1000:.1f} ms per cell)", flush=True)
    ratio = results[True] / results[False]
    print(f"ratio arrays / one by one: {ratio:.3f} (goal <= 0.1: {'met' if ratio <= 0.1 else 'NOT met'})")


def bench_status(folder: Path, n: int, queued: int) -> None:
    spec, campaign, cells = make_campaign(folder, "status", n, True)
    launcher = pick_launcher(spec)
    lifecycle.launch(campaign, launcher, cells[:queued], Progress(queued, io.StringIO()))
    for i, cell in enumerate(cells[queued:]):
        update_status(campaign.cell_dir(cell.id), "done" if i % 10 else "failed", reason="bench")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(3):
        clock = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(campaign.root)],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - clock)
        assert out.returncode == 0, out.stderr
    lifecycle.cancel(campaign, launcher, cells[:queued])
    best, worst = min(times), max(times)
    print(f"status over {n} cells ({queued} queued in Slurm): best {best:.2f} s, worst {worst:.2f} s "
          f"(goal <= 5 s: {'met' if worst <= 5 else 'NOT met'})\n  {out.stdout.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submit-cells", type=int, default=1000)
    parser.add_argument("--status-cells", type=int, default=10000)
    parser.add_argument("--queued", type=int, default=2000)
    parser.add_argument("--only", choices=("submit", "status"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slurm-", dir=os.environ.get("BENCH_DIR", "/var/tmp")) as folder:
        if args.only in (None, "submit"):
            bench_submission(Path(folder), args.submit_cells)
        if args.only in (None, "status"):
            bench_status(Path(folder), args.status_cells, args.queued)
    return 0


if __name__ == "__main__":
    sys.exit(main())
