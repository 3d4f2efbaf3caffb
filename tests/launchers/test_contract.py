"""One contract for every launcher: the same cases, run through the command line only, against

- `local`: this machine;
- `slurm-recorded`, `oar-recorded`: fake scheduler commands (tests/fake_schedulers/) that run each job as a
  local background process and answer in the formats recorded from the live servers (tests/data/*/live-*);
- `slurm-live`, `oar-live`: the real one-node Slurm (with slurmdbd) and the real OAR 2.5 server
  (tests/clusters/*-up.sh), marked `cluster`: selected by `make test`, not by a plain pytest; a selected live
  case fails, naming the script to run, when its server is down.

The suite talks to the tool only through its command line and the campaign files (status.json, result.json,
history; docs/result-schema.md), so it holds whatever the launchers' insides become. The jobs are real
tiny cells (MobileNet-V2 at 32x32, eager); a failing job is a real one too (a node type promising a GPU this
machine lacks), and a silent death is a real SIGKILL of the job's process, found from status.json.

Campaigns are shared where one shows several cases, and computed once per launcher kind (the `outcome` cache),
so a test asserts on what its campaign recorded: one `basic` campaign of three cells shows submit, a non-zero
exit, a silent death and a retry on every kind; a one-cell campaign shows the timeout (timeout_s is the sweep's,
and the other cells need more than its 8 s on a loaded machine); cancel, resume + no duplicate, and the
unreachable scheduler have a campaign each, run on the kinds listed at CANCEL_KINDS, RESUME_KINDS and
UNREACHABLE_KINDS (with why the others are left out).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, cell_statuses, process_alive, tiny_sweep, wait_for
from tests.test_oar_server import _job_user_python, _port_open  # the OAR job user's venv and port probe, one copy

FAKES = ROOT / "tests" / "fake_schedulers"
CATALOG = FAKES / "node_types.yaml"
SLURM_UP = "bash tests/clusters/slurm-up.sh"
OAR_UP = "bash tests/clusters/oar-up.sh"
OAR_LAB = Path(os.environ.get("BT_OAR_LAB", "/var/lib/benchmark-tracker/oar-lab"))
OAR_USER = os.environ.get("BT_OAR_USER", "oartest")
SCHEDULER_TIMEOUT_S = "3"  # how long one unanswered scheduler command is waited for (the tool's knob)
TIMEOUT_S = 8               # the overrunning cell's timeout_s
FINAL = ("done", "failed", "skipped")

# Every launcher runs the contract: the recorded fakes (no services, no root), this machine (`local`), and the
# live servers (marked `cluster`). The live and local kinds cost real jobs on a 2-core CI machine, so they run
# the cases that share one campaign (EVERY_KIND: submit, a non-zero exit, a silent death, a retry, all read from
# the `basic` campaign) and the cheap one-cell timeout; the cases that need a campaign of their own run where
# noted at each case (RESUME_KINDS, CANCEL_KINDS, UNREACHABLE_KINDS), with the reason.
LIVE_KINDS = [pytest.param("slurm-live", marks=pytest.mark.cluster), pytest.param("oar-live", marks=pytest.mark.cluster)]
LOCAL_KIND = "local"
KINDS = ["slurm-recorded", "oar-recorded"]
EVERY_KIND = [*KINDS, LOCAL_KIND, *LIVE_KINDS]

# A scheduler that does not answer cannot be expressed for `local` (there is no scheduler), nor for `oar-live`:
# OAR's clients read /etc/oar/oar.conf through a setuid wrapper, so a test cannot point them at a dead server
# without stopping the shared one (forbidden: other tests use it). slurm-live points the real clients at a dead
# controller (SLURM_CONF); oar-recorded uses a client that hangs, as one does when its server is gone.
UNREACHABLE_KINDS = ["slurm-recorded", "oar-recorded"]
# Cancel needs two long cells of its own: run on the recorded kinds and on local (whose sweep must also stop
# starting cells); the live servers' cancel is left to tests/test_oar_server.py (a queued job cancelled, a running
# one deleted) and, for Slurm, to the recorded formats (scancel, CANCELLED in squeue/sacct): two long jobs of the
# shared one-node cluster would show nothing more for their CI minutes.
CANCEL_KINDS = [*KINDS, LOCAL_KIND]
# Resume and adoption after a killed submitter: every kind but slurm-live. Slurm's adoption (a job found by name
# in squeue/sacct) is the same code on the recorded kind, whose squeue/sacct answer in the recorded formats; the
# live OAR runs it because its `oarstat -u` listing is what the adoption reads there.
RESUME_KINDS = [*KINDS, LOCAL_KIND, LIVE_KINDS[1]]


# --- the launcher kinds ----------------------------------------------------------------------------

class Kind:
    """How to run the command line against one launcher kind: its environment, its user, its folders."""

    def __init__(self, name: str, base: Path):
        self.name, self.base = name, base
        self.launcher = name.split("-")[0]
        self.scheduler = self.launcher != "local"
        self.sched_dir = base / "scheduler"  # the fakes' state, and the pause switch of every kind
        self.sched_dir.mkdir(parents=True, exist_ok=True)
        self.user = None
        self.python = sys.executable
        path = os.environ["PATH"]
        self.real_dir = None
        if name.endswith("-recorded"):
            path = f"{FAKES / 'bin'}:{path}"
        elif name == "slurm-live":
            self.real_dir = str(Path(shutil.which("sbatch")).parent)
            path = f"{FAKES / 'pause'}:{path}"
        elif name == "oar-live":
            self.real_dir = str(OAR_LAB / "shims")
            path = f"{FAKES / 'pause'}:{OAR_LAB / 'shims'}:/usr/bin:/bin"
        self.env = {"PYTHONPATH": str(ROOT), "BENCHMARK_TRACKER_NODE_TYPES": str(CATALOG), "PATH": path,
                    "FAKE_SCHEDULER_DIR": str(self.sched_dir), "FAKE_SCHEDULER_PYTHON": sys.executable,
                    "BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S": "60"}
        if self.real_dir:
            self.env["PAUSE_REAL_DIR"] = self.real_dir

    def command(self, args, extra: dict | None = None) -> tuple:
        env = {**os.environ, **self.env, **(extra or {})}
        argv = [self.python, "-m", "orchestrator.cli", *map(str, args)]
        if self.user is not None:  # oar-live: as the job user (OAR refuses root's jobs), with a bare environment
            keep = {k: env[k] for k in ("PATH", "PYTHONPATH", "BENCHMARK_TRACKER_NODE_TYPES", "FAKE_SCHEDULER_DIR",
                                        "PAUSE_REAL_DIR", "BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S") if k in env}
            keep.update({"HOME": self.user.pw_dir, "LANG": "C.UTF-8", "TZ": "UTC", **(extra or {})})
            argv = ["runuser", "-u", OAR_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in keep.items()], *argv]
            env = None
        return argv, env

    def cli(self, *args, extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        argv, env = self.command(args, extra)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)

    def start(self, *args, extra: dict | None = None) -> subprocess.Popen:
        argv, env = self.command(args, extra)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def sweep_file(self, name: str, *, node_types: str = "contract", repetitions: int = 1, iterations: int = 3,
                   duration_s: float | None = None, timeout_s: float = 300, top: str = "", one_at_a_time=False,
                   phases: str = "[inference]") -> Path:
        text = tiny_sweep(name, phases=phases, iterations=iterations, timeout=timeout_s, node_type=node_types,
                          launcher=self.launcher, repetitions=repetitions, idle_s=0)
        if duration_s is not None:
            text = text.replace(f"iterations: {iterations}", f"duration_s: {duration_s}")
        text += top
        if self.launcher == "slurm":
            # one_at_a_time: one array, one task at a time (a pending cell exists); else one job per cell
            # (so that a campaign is submitted in several steps: "mid-campaign" exists)
            text += "slurm:\n" + ("  array_parallelism: 1\n" if one_at_a_time else "  max_array_size: 1\n")
        if self.launcher == "oar":
            text += "oar:\n  kwollect: false\n"
        path = self.base / f"{name}.yaml"
        path.write_text(text)
        self.own(path)
        return path

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @property
    def out(self) -> Path:
        return self.base / "results"

    def wait(self, campaign: Path, timeout: float = 240) -> subprocess.CompletedProcess:
        return self.cli("wait", campaign, "--poll", "1", "--timeout", timeout, timeout=timeout + 60)


def _check_slurm() -> None:
    problems = []
    if shutil.which("scontrol") is None:
        problems.append("scontrol is not installed")
    else:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
        if "UP" not in ping.stdout:
            problems.append(f"slurmctld does not answer: {(ping.stdout + ping.stderr).strip()}")
        elif subprocess.run(["sacct", "-n", "-X"], capture_output=True, timeout=30).returncode != 0:
            problems.append("sacct fails (slurmdbd down?)")
    if problems:
        pytest.fail(f"the Slurm test cluster is not up ({'; '.join(problems)}): run `{SLURM_UP}` as root first",
                    pytrace=False)


def _check_oar():
    hint = f"run `{OAR_UP}` as root (stop it with `bash tests/clusters/oar-down.sh`)"
    if not (OAR_LAB / "shims" / "oarsub").exists():
        pytest.fail(f"the OAR test server is not set up ({OAR_LAB / 'shims'} missing): {hint}", pytrace=False)
    if not (_port_open(6666) and _port_open(6667)):
        pytest.fail(f"the OAR test server is not running (nothing on 127.0.0.1:6666/6667): {hint}", pytrace=False)
    try:
        user = pwd.getpwnam(OAR_USER)
    except KeyError:
        pytest.fail(f"the OAR job user {OAR_USER} does not exist: {hint}", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the oar-live cases run the tool as the OAR job user: run them as root", pytrace=False)
    return user


_KINDS: dict = {}


@pytest.fixture(scope="session")
def contract_root():
    """Our own folder: pytest's numbered temporary folders are pruned by other pytest sessions on this machine,
    which a suite of several minutes must not race with."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bt-contract-"))
    yield root
    if not os.environ.get("BT_CONTRACT_KEEP"):  # set it to look at the campaigns afterwards
        shutil.rmtree(root, ignore_errors=True)
        for made in _KINDS.values():  # oar-live's folder is in the job user's home, not under root
            if made.user is not None:
                shutil.rmtree(made.base, ignore_errors=True)


@pytest.fixture
def kind(request, contract_root) -> Kind:
    name = request.param
    if name not in _KINDS:
        if name == "slurm-live":
            _check_slurm()
        user = _check_oar() if name == "oar-live" else None
        if user is not None:  # the job user's own folder: OAR writes its files there as that user
            base = Path(user.pw_dir) / "bt-tests" / f"contract-{uuid.uuid4().hex[:8]}"
            base.mkdir(parents=True)
            os.chown(base.parent, user.pw_uid, user.pw_gid)
        else:
            base = contract_root / name
            base.mkdir()
        made = Kind(name, base)
        if user is not None:
            made.user, made.python = user, _job_user_python(Path(user.pw_dir) / "bt-tests", user)
            for folder in (base, made.sched_dir):
                os.chown(folder, user.pw_uid, user.pw_gid)
        _KINDS[name] = made
    return _KINDS[name]


# --- what a campaign shows -------------------------------------------------------------------------

def job_processes(root: Path) -> dict:
    """{pid: argv} of every live process whose command line names this campaign's folder (its jobs)."""
    found = {}
    needle = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in argv and state != "Z":
            found[int(entry.name)] = [a.decode(errors="replace") for a in argv.split(b"\0") if a]
    return found


def orphans(root: Path, timeout: float = 20) -> dict:
    """The campaign's job processes still alive `timeout` s from now (a job's last words may take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = job_processes(root)
        if not left:
            return {}
        time.sleep(0.5)
    return job_processes(root)


class Measurements:
    """Every `jobs.run` process of a campaign's cells, sampled from /proc: which ran, and how many at once."""

    def __init__(self, root: Path):
        self.root, self.seen, self.most = root, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            alive = {}
            for pid, argv in job_processes(self.root).items():
                if "jobs.run" in argv:
                    cell = Path(argv[-1]).name
                    self.seen.setdefault(cell, set()).add(pid)
                    alive[cell] = alive.get(cell, 0) + 1
            for cell, count in alive.items():
                self.most[cell] = max(self.most.get(cell, 0), count)
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self._thread.join()


def only(campaign: Path) -> dict:
    [status] = cell_statuses(campaign).values()
    return status


def running_pid(campaign: Path):
    """(cell id, pid of its measuring process) once a cell's job runs, else None."""
    for cell_id, status in cell_statuses(campaign).items():
        if status.get("state") == "running" and status.get("pid"):
            return cell_id, status["pid"]
    return None


def wait_running(sweeper: subprocess.Popen, campaign: Path, what: str, timeout: float = 180):
    """running_pid, failing at once (with its stderr) if the sweep ended without a cell running."""
    def check():
        found = running_pid(campaign)
        if found is None and sweeper.poll() is not None and sweeper.returncode != 0:
            raise AssertionError(f"{what}: the sweep ended with exit {sweeper.returncode}:\n"
                                 f"{sweeper.stderr.read()[-3000:]}\nstatuses: {show(cell_statuses(campaign))}")
        return found
    return wait_for(check, timeout, every=0.05, what=what)


def show(value) -> str:
    """A status (or {cell: status}) in full for an assertion message, without its long history text."""
    return json.dumps(value, indent=1, sort_keys=True, default=str)[-4000:]


def kill_sweep(sweeper: subprocess.Popen) -> None:
    """SIGKILL the `sweep` process itself (oar-live: the tool under runuser, not runuser alone)."""
    victims = [sweeper.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == sweeper.pid and b"orchestrator.cli" in argv:
            victims.append(int(stat.parent.name))
    for pid in reversed(victims):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def all_final(campaign: Path, count: int):
    found = cell_statuses(campaign)
    return found if len(found) == count and all(s["state"] in FINAL for s in found.values()) else None


# Campaigns computed once per kind and shared by the cases that read them.
_OUTCOMES: dict = {}


def outcome(kind: Kind, name: str, make):
    key = (kind.name, name)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = make(kind)
    return _OUTCOMES[key]


def run_to_end(kind: Kind, sweep: Path, campaign: Path, extra: dict | None = None) -> dict:
    """`sweep`, then (schedulers) `wait`: their exit codes and what `status` says after."""
    swept = kind.cli("sweep", sweep, "--output", kind.out, extra=extra)
    waited = kind.wait(campaign) if swept.returncode in (0, 1) else None
    shown = kind.cli("status", campaign)
    return {"sweep": swept, "wait": waited, "status": shown, "statuses": cell_statuses(campaign)}


# --- submit, a non-zero exit, a silent death and a retry: one campaign of three cells -------------------

def cell_of_type(campaign: Path, node_type: str) -> str | None:
    for path in (campaign / "cells").glob("*/cell.json"):
        try:
            if json.loads(path.read_text())["params"]["node_type"] == node_type:
                return path.parent.name
        except (OSError, ValueError):
            continue
    return None


def _basic(kind: Kind) -> dict:
    """One real campaign shows four cases on every kind: `contract` runs to done (submit), `contract-nogpu` fails in
    its job (a non-zero exit), `contract-killed` has its measuring process SIGKILLed once running (a silent death)
    and, with `max_retries: 1` (the core's, at the sweep's top level), runs again to done (a retry)."""
    sweep = kind.sweep_file("basic", node_types="contract, contract-nogpu, contract-killed", top="max_retries: 1\n")
    campaign = kind.out / "basic"
    sweeper = kind.start("sweep", sweep, "--output", kind.out)  # local: it runs the cells; schedulers: submits
    try:
        def victim():
            cell_id = cell_of_type(campaign, "contract-killed")
            status = cell_statuses(campaign).get(cell_id) if cell_id else None
            if status is None and sweeper.poll() is not None and sweeper.returncode not in (0, 1):
                raise AssertionError(f"the sweep ended with exit {sweeper.returncode}:\n{sweeper.stderr.read()[-3000:]}")
            return status["pid"] if status and status.get("state") == "running" and status.get("pid") else None
        pid = wait_for(victim, 240, every=0.05, what="the contract-killed cell's job running")
        os.kill(pid, signal.SIGKILL)  # no handler runs, nothing is written by the job
        out, err = sweeper.communicate(timeout=400)
    finally:
        if sweeper.poll() is None:
            kill_sweep(sweeper)
    found = {"sweep": subprocess.CompletedProcess(sweeper.args, sweeper.returncode, out, err),
             "wait": kind.wait(campaign), "killed_pid": pid, "campaign": campaign}
    found["status"] = kind.cli("status", campaign)
    by_type = {}
    for cell_id, status in cell_statuses(campaign).items():
        cell = json.loads((campaign / "cells" / cell_id / "cell.json").read_text())
        by_type[cell["params"]["node_type"]] = (cell_id, status)
    found["by_type"] = by_type
    found["orphans"] = orphans(campaign)
    return found


@pytest.mark.parametrize("kind", EVERY_KIND, indirect=True)
def test_submit_runs_a_cell_to_done_with_its_result(kind):
    found = outcome(kind, "basic", _basic)
    swept = found["sweep"]
    assert "contract" in found["by_type"], (swept.stdout, swept.stderr)
    cell_id, status = found["by_type"]["contract"]
    assert status["state"] == "done", show(status)
    result = json.loads((found["campaign"] / "cells" / cell_id / "result.json").read_text())
    assert result["status"] == "done" and result["cell_id"] == cell_id
    assert result["window"]["iterations"] == 3
    assert status["attempts"] == 1 and status["launcher"] == kind.launcher
    assert not found["orphans"], found["orphans"]


@pytest.mark.parametrize("kind", EVERY_KIND, indirect=True)
def test_a_non_zero_exit_fails_the_cell_with_the_jobs_reason_and_exit_1(kind):
    found = outcome(kind, "basic", _basic)
    _, status = found["by_type"]["contract-nogpu"]
    assert status["state"] == "failed", show(status)
    assert status["reason"].startswith("RuntimeError: node type contract-nogpu promises 1 GPU"), status["reason"]
    assert isinstance(status.get("exit_code"), int) and status["exit_code"] != 0, show(status)  # the job's exit code
    assert status["attempts"] == 1, show(status)  # the cell's own error: never retried
    # The campaign has a failed cell: sweep (local: it ran the cells) or wait, and status, exit 1.
    if kind.scheduler:
        assert found["sweep"].returncode == 0, found["sweep"].stderr
        assert found["wait"].returncode == 1, found["wait"].stderr
    else:
        assert found["sweep"].returncode == 1, found["sweep"].stderr
    assert found["status"].returncode == 1, found["status"].stdout + found["status"].stderr


@pytest.mark.parametrize("kind", EVERY_KIND, indirect=True)
def test_a_silent_death_fails_the_cell_with_a_reason_naming_it(kind):
    found = outcome(kind, "basic", _basic)
    _, status = found["by_type"]["contract-killed"]
    [first] = status["history"]  # the killed attempt, before its retry
    assert first["state"] == "failed" and "SIGKILL" in first["reason"], show(first)
    assert not process_alive(found["killed_pid"]) and not found["orphans"], found["orphans"]


@pytest.mark.parametrize("kind", EVERY_KIND, indirect=True)
def test_a_failed_attempt_is_retried_and_every_attempt_recorded(kind):
    found = outcome(kind, "basic", _basic)
    cell_id, status = found["by_type"]["contract-killed"]
    assert status["state"] == "done" and status["attempts"] == 2, show(status)
    [first] = status["history"]
    assert first["state"] == "failed" and "SIGKILL" in first["reason"], first
    job = json.loads((found["campaign"] / "cells" / cell_id / "job.json").read_text())
    assert job["attempt"] == 2, job  # one job record per attempt: the current one is the retry's
    # Followed to the end: `wait` says the campaign has a failed cell (contract-nogpu), not this one.
    assert found["wait"].returncode == 1, found["wait"].stdout + found["wait"].stderr


# --- a timeout ------------------------------------------------------------------------------------

def _overrun(kind: Kind) -> dict:
    """One cell far over its timeout_s, its submitter gone (a scheduler's sweep exits once it submitted; the local
    sweep is SIGKILLed): the guard on the node alone stops it, and says why."""
    sweep = kind.sweep_file("overrun", duration_s=600, timeout_s=TIMEOUT_S)
    campaign = kind.out / "overrun"
    sweeper = kind.start("sweep", sweep, "--output", kind.out)
    try:
        wait_running(sweeper, campaign, "the overrunning cell running")
        started = time.monotonic()
        if not kind.scheduler:  # the submitter gone, as a scheduler's sweep is once it submitted: the guard alone
            kill_sweep(sweeper)  # holds the timeout (SIGKILL: nothing of the sweep runs after)
        # The cell's own timeout_s holds on every launcher (the guard on the node enforces it), not only
        # the scheduler's coarser limit (Slurm's whole minutes): judged well before a one-minute limit.
        final = None
        deadline = started + TIMEOUT_S + 40
        while time.monotonic() < deadline and final is None:
            status = only(campaign)
            final = status if status["state"] in FINAL else None
            time.sleep(0.3)
        elapsed = time.monotonic() - started
        _, err = sweeper.communicate(timeout=300)
    finally:
        if sweeper.poll() is None:
            kill_sweep(sweeper)
    waited = kind.wait(campaign, timeout=30 if final is None else 240)
    return {"final": final, "elapsed": elapsed, "status": only(campaign), "wait": waited,
            "orphans": orphans(campaign), "sweep_err": err}


@pytest.mark.parametrize("kind", EVERY_KIND, indirect=True)
def test_a_timeout_fails_the_cell_as_timeout_and_leaves_no_process(kind):
    found = outcome(kind, "overrun", _overrun)
    assert found["final"] is not None, (f"still {found['status']['state']} {found['elapsed']:.0f} s after it "
                                        f"started, with timeout_s {TIMEOUT_S}: {show(found['status'])}")
    status = found["status"]  # once `wait` returned
    assert status["state"] == "failed" and status.get("timed_out") is True, show(status)
    assert "timed out" in status["reason"] or "timeout" in status["reason"], status["reason"]
    if kind.scheduler:  # the guard names the job it stopped
        assert status.get("job_id"), show(status)
    # A final status is written once, last: what `status`/`wait` first saw as final is what stays.
    first = found["final"]
    assert (first["state"], first.get("reason")) == (status["state"], status["reason"]), show(first)
    assert found["wait"].returncode == 1
    assert not found["orphans"], found["orphans"]


# --- cancel ---------------------------------------------------------------------------------------

def _cancel(kind: Kind) -> dict:
    # Two long cells: the first runs, the second waits (local: behind it in the sweep; Slurm: one array, one
    # task at a time; OAR: host=1 on the one test host). Two phases, not two repetitions: the core submits
    # repetitions in rounds, which would make two separate Slurm jobs, both running.
    sweep = kind.sweep_file("cancel", phases="[inference, training]", duration_s=600, one_at_a_time=True)
    campaign = kind.out / "cancel"
    sweeper = kind.start("sweep", sweep, "--output", kind.out)
    try:
        cell_id, pid = wait_running(sweeper, campaign, "a cell running")
        if kind.scheduler:  # the sweep submits and exits; the other cell is queued behind the running one
            sweeper.communicate(timeout=120)
        before = cell_statuses(campaign)
        # Two `cancel` at once: the second waits for the first, then finds nothing left open.
        argv, env = kind.command(["cancel", campaign])
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        cancelled = kind.cli("cancel", campaign, timeout=180)
        out, err = second.communicate(timeout=180)
        other_cancel = subprocess.CompletedProcess(argv, second.returncode, out, err)
        final = wait_for(lambda: all_final(campaign, 2), 60, every=0.3, what="both cells final after cancel")
        _, err = sweeper.communicate(timeout=120)
    finally:
        if sweeper.poll() is None:
            kill_sweep(sweeper)
    return {"running": cell_id, "pid": pid, "before": before, "cancels": [cancelled, other_cancel], "final": final,
            "sweep": sweeper.returncode, "sweep_err": err, "status": kind.cli("status", campaign),
            "wait": kind.wait(campaign, timeout=30), "orphans": orphans(campaign)}


@pytest.mark.parametrize("kind", CANCEL_KINDS, indirect=True)
def test_cancel_stops_running_and_pending_cells_recorded_cancelled_by_the_user(kind):
    found = outcome(kind, "cancel", _cancel)
    other = next(c for c in found["before"] if c != found["running"]) if len(found["before"]) == 2 else None
    assert [c.returncode for c in found["cancels"]] == [0, 0], [c.stdout + c.stderr for c in found["cancels"]]
    said = sorted(c.stdout.strip().split(" of ")[0] for c in found["cancels"])
    assert said == ["cancelled 0 open cell(s)", "cancelled 2 open cell(s)"], said  # one did it, the other agreed
    for cell_id, status in found["final"].items():
        which = "the running cell" if cell_id == found["running"] else "the pending cell"
        assert status["state"] == "failed" and status.get("cancelled") is True, (which, show(status))
        assert status["reason"].startswith("cancelled by the user"), (which, status["reason"])
    if other is not None:  # the pending one never started
        assert "running_at" not in found["final"][other], found["final"][other]
        if not kind.scheduler:  # nor was it handed to a job
            assert "submitted_at" not in found["final"][other], found["final"][other]
    # gone once cancel returns, give or take the scheduler's KillWait (3 s on the test cluster) to reap it
    wait_for(lambda: not process_alive(found["pid"]), timeout=10, what="the cancelled job's process gone")
    assert not found["orphans"], found["orphans"]
    if not kind.scheduler:
        assert found["sweep"] == 1, found["sweep_err"]  # its cells failed (cancelled)
        assert "cancelled; rerun the same command to resume" in found["sweep_err"], found["sweep_err"]
    assert found["status"].returncode == 1 and found["wait"].returncode == 1, (found["status"].stdout,
                                                                                found["wait"].stdout)


# --- the scheduler unreachable ------------------------------------------------------------------------

def _unreachable(kind: Kind) -> dict:
    cells = 5  # more than one submission batch (OAR submits 4 at a time; Slurm here one job per cell)
    sweep = kind.sweep_file("down", repetitions=cells)
    campaign = kind.out / "down"
    extra = {"BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S": SCHEDULER_TIMEOUT_S}
    if kind.name == "slurm-live":  # the real clients, pointed at a controller port where nothing answers
        conf = kind.base / "dead-slurm.conf"
        text = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
        conf.write_text("\n".join("SlurmctldPort=6999" if line.startswith("SlurmctldPort") else line
                                  for line in text.splitlines()) + "\n")
        extra["SLURM_CONF"] = str(conf)
    else:
        (kind.sched_dir / "down").write_text("")
    clock = time.monotonic()
    try:
        swept = kind.cli("sweep", sweep, "--output", kind.out, extra=extra, timeout=300)
    finally:
        (kind.sched_dir / "down").unlink(missing_ok=True)
    elapsed = time.monotonic() - clock
    after_down = cell_statuses(campaign)
    # Back up: a plain rerun takes every cell up again (then they are cancelled: running them proves nothing more).
    rerun = kind.cli("sweep", sweep, "--output", kind.out, timeout=300)
    resumed = cell_statuses(campaign)
    kind.cli("cancel", campaign, timeout=180)
    return {"sweep": swept, "elapsed": elapsed, "after": after_down, "rerun": rerun, "resumed": resumed,
            "cells": cells, "orphans": orphans(campaign)}


@pytest.mark.parametrize("kind", UNREACHABLE_KINDS, indirect=True)
def test_an_unreachable_scheduler_stops_the_campaign_clearly_and_cells_resume(kind):
    found = outcome(kind, "down", _unreachable)
    swept = found["sweep"]
    assert swept.returncode == 1, swept.stdout + swept.stderr
    assert "unreachable" in swept.stderr.lower(), swept.stderr  # said plainly, not as a refusal of the resources
    assert "submitted" not in swept.stdout  # 0 submissions are never reported as some
    tried = [s for s in found["after"].values() if s.get("attempts", 0) or s["state"] != "pending"]
    assert len(tried) < found["cells"], found["after"]  # it stopped at the first failure, not cell after cell
    assert found["elapsed"] < 60, found["elapsed"]
    assert all(s["state"] not in ("submitted", "running") for s in found["after"].values()), found["after"]
    # Resumable: the rerun, with the scheduler back, submits every cell (none is left failed for good).
    assert found["rerun"].returncode == 0, found["rerun"].stderr
    assert len(found["resumed"]) == found["cells"], found["resumed"]
    assert all(s["state"] in ("submitted", "running", "done") for s in found["resumed"].values()), found["resumed"]


# --- the submitter killed mid-campaign: resume, and no duplicate job after adoption -----------------

def _killed_submitter(kind: Kind) -> dict:
    sweep = kind.sweep_file("resume", repetitions=2)
    campaign = kind.out / "resume"
    watch = Measurements(campaign)
    try:
        paused = kind.sched_dir / "paused"
        if kind.scheduler:
            # The first submission reaches the scheduler, then its client is slow to answer: the sweep is
            # killed before it could record that job (and before the second cell was submitted).
            (kind.sched_dir / "pause-after-submit").write_text("60")
            kind.own(kind.sched_dir / "pause-after-submit")
        sweeper = kind.start("sweep", sweep, "--output", kind.out)
        try:
            if kind.scheduler:
                wait_for(paused.exists, 120, every=0.05, what="the first job submitted, its answer pending")
            else:  # local: killed while its first cell's job runs
                wait_running(sweeper, campaign, "the first cell running")
        finally:
            kill_sweep(sweeper)
            sweeper.communicate(timeout=60)
            adopted = paused.read_text() if paused.exists() else None
            paused.unlink(missing_ok=True)  # the slow client answers now, to a sweep that is gone
        (kind.sched_dir / "pause-after-submit").unlink(missing_ok=True)
        rerun = kind.cli("sweep", sweep, "--output", kind.out, timeout=400)
        waited = kind.wait(campaign)
        final = wait_for(lambda: all_final(campaign, 2), 120, what="both cells final") if waited.returncode != 3 \
            else cell_statuses(campaign)
        left = orphans(campaign)
    finally:
        watch.stop()
    return {"rerun": rerun, "wait": waited, "final": final, "seen": watch.seen, "most": watch.most,
            "orphans": left, "campaign": campaign, "paused": adopted}


@pytest.mark.parametrize("kind", RESUME_KINDS, indirect=True)
def test_resume_after_the_submitter_was_killed_finishes_the_campaign(kind):
    found = outcome(kind, "resume", _killed_submitter)
    assert found["rerun"].returncode == 0, found["rerun"].stdout + found["rerun"].stderr
    assert found["wait"].returncode == 0, found["wait"].stdout + found["wait"].stderr
    assert len(found["final"]) == 2
    for cell_id, status in found["final"].items():
        assert status["state"] == "done", show(status)
        assert (found["campaign"] / "cells" / cell_id / "result.json").exists()
    assert not found["orphans"], found["orphans"]


@pytest.mark.parametrize("kind", RESUME_KINDS, indirect=True)
def test_no_duplicate_job_after_adoption(kind):
    found = outcome(kind, "resume", _killed_submitter)
    assert len(found["final"]) == 2, found["final"]
    for cell_id, status in found["final"].items():
        jobs = found["seen"].get(cell_id, set())
        # Never two measurements of one cell at once; each one that ran is an attempt the cell records.
        assert found["most"].get(cell_id, 0) <= 1, (cell_id, found["most"])
        assert len(jobs) == status["attempts"], (f"cell {cell_id}: {len(jobs)} measuring process(es) ran, "
                                                 f"{status['attempts']} attempt(s) recorded", show(status))
        assert len(status.get("history", [])) == status["attempts"] - 1, show(status)
        if kind.scheduler:  # the job that ran the cell is known to it: adopted, not merely left to run
            assert status.get("job_id") is not None, show(status)
        record = json.loads((found["campaign"] / "cells" / cell_id / "job.json").read_text())
        assert record["attempt"] == status["attempts"], (record, show(status))  # the current attempt's job
        assert str(record["job_id"]) == str(status.get("job_id", record["job_id"])), (record, show(status))
    if not kind.scheduler:  # local: the job the killed sweep left running was stopped by the rerun, as an attempt
        [orphaned] = [(c, s) for c, s in found["final"].items() if s["attempts"] == 2]
        cell_id, status = orphaned
        assert status["history"][-1]["reason"].startswith("its sweep was killed; the job left running"), show(status)
        assert "still runs; stopping it" in found["rerun"].stderr, found["rerun"].stderr
        earlier = json.loads((found["campaign"] / "cells" / cell_id / "attempts" / "1" / "job.json").read_text())
        assert earlier["attempt"] == 1, earlier  # one job record per attempt, the earlier ones set aside
    if kind.scheduler:  # the job the killed sweep never recorded is the one its cell's record names now
        paused_job = re.findall(r"\d+", found["paused"] or "")[-1:]
        adopted = [json.loads(p.read_text()) for p in (found["campaign"] / "cells").glob("*/job.json")]
        assert [r["job_id"] for r in adopted if r.get("adopted")] == paused_job, (found["paused"], adopted)
