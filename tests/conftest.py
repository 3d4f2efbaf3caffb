"""Shared helpers: write small sweeps, run the real CLI in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A runner that starts the suite in the background without job control (`cmd &` in a script) leaves SIGINT
# ignored, and every child would inherit that: the Ctrl-C tests would then see a sweep that cannot be
# interrupted. A handler (unlike SIG_IGN) is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def write_sweep(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_cli(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """The installed command line, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=kwargs.get("cwd", ROOT))


@pytest.fixture(autouse=True, scope="session")
def _own_host_lock(tmp_path_factory):
    """The suite's own per-host measurement lock: another checkout's tests on this machine never make ours wait
    (within the suite, local sweeps still take turns, as they must)."""
    os.environ.setdefault("BENCHMARK_TRACKER_HOST_LOCK", str(tmp_path_factory.mktemp("host-lock") / "host.lock"))


# Files whose tests submit to the live one-node servers: under `pytest -n 2 --dist loadscope` (make test)
# each server's tests stay on one worker, in order, so they never queue behind each other's jobs.
LIVE_SERVER_FILES = {"test_slurm.py": "slurm-live", "test_scaling_slurm.py": "slurm-live",
                     "test_oar_server.py": "oar-live"}


# Tests of one file that share nothing costly and take minutes each: each is a unit of its own, so the two
# workers share them out (test_backends' probe tests share the module's `probes` and stay together).
SPLIT_FILES = {"tests/test_backends.py": ("test_forward_agrees_with_tensorflow",
                                          "test_parameter_counts_agree_with_tensorflow", "test_one_training_step")}


def worker_unit(nodeid: str) -> str:
    """The unit one xdist worker runs in order: a live server's tests; the contract suite's cases of one
    launcher kind (its campaigns are cached per kind); otherwise one file (a module-scoped fixture, such as
    one real campaign shared by several assertions, is then built once)."""
    path, _, name = nodeid.partition("::")
    param = name.partition("[")[2].rstrip("]")
    if param in ("slurm-live", "oar-live"):
        return param
    if path.rsplit("/", 1)[-1] in LIVE_SERVER_FILES:
        return LIVE_SERVER_FILES[path.rsplit("/", 1)[-1]]
    if path == "tests/launchers/test_contract.py":
        return f"{path}[{param}]"
    if path in SPLIT_FILES:
        shared = name.partition("[")[0] in SPLIT_FILES[path]
        return f"{path}::shared" if shared else nodeid
    return path


@pytest.hookimpl(optionalhook=True)  # xdist's hook; a plain pytest without xdist never calls it
def pytest_xdist_make_scheduler(config, log):
    """loadscope with our scopes (xdist's own loadgroup marks do not reach pytest 9.2's node ids)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByServerOrFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_unit(nodeid)

    return ByServerOrFile(config, log)


@pytest.fixture
def sweep_file(tmp_path):
    return lambda text, name="sweep.yaml": write_sweep(tmp_path, text, name)


def process_alive(pid: int) -> bool:
    """Running, not merely a zombie (a killed process whose parent died with it waits for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def cell_statuses(campaign: Path) -> dict:
    """{cell id: status} of a campaign folder; a status being rewritten or damaged is left out."""
    out = {}
    for path in campaign.glob("cells/*/status.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    return out


def wait_for(predicate, timeout: float = 120, every: float = 0.1, what: str = "condition"):
    """Poll until `predicate()` is truthy and return its value; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout:g} s")


# A real MobileNet-V2 at its smallest input, eager, a handful of iterations: about 10 s per cell.
TINY_SWEEP = """
name: {name}
matrix:
  tests: [mobilenet_v2]
  phases: {phases}
  repetitions: {repetitions}
  node_types: [{node_type}]
defaults:
  batch_size: 2
  input_size: [32, 32]
  execution: eager
  warmup_iterations: 1
  iterations: {iterations}
launcher: {launcher}
timeout_s: {timeout}
energy:
  pue: 1.5
  carbon_intensity_g_per_kwh: 50
  country_iso_code: FRA
  idle_s: {idle_s}
"""


def tiny_sweep(name: str = "tiny", phases: str = "[inference, training]", iterations: int = 3,
               timeout: float = 300, node_type: str = "local", launcher: str = "local", repetitions: int = 1,
               idle_s: float = 1) -> str:
    return TINY_SWEEP.format(name=name, phases=phases, iterations=iterations, timeout=timeout,
                             node_type=node_type, launcher=launcher, repetitions=repetitions, idle_s=idle_s)
