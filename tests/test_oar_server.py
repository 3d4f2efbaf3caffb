"""Against a real OAR 2.5 (tests/clusters/oar-up.sh): a sweep submitted through execo end to end, with the
Kwollect step; a running job deleted, a queued one cancelled; a property filter that matches no node. A sweep
killed after oarsub, whose job the rerun adopts, is a contract case (tests/launchers/test_contract.py, oar-live).

The orchestrator runs as the unprivileged job user (as on a frontend: OAR refuses jobs owned by root), with
an interpreter that user may run. These tests FAIL, never skip, when the server is not up.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import tiny_sweep, wait_for
from tests.test_kwollect import FakeKwollect

pytestmark = pytest.mark.cluster  # live cluster: selected by `make test`, not by a plain pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("BT_OAR_LAB", "/var/lib/benchmark-tracker/oar-lab"))
JOB_USER = os.environ.get("BT_OAR_USER", "oartest")
CATALOG = ROOT / "tests" / "data" / "oar" / "node_types.yaml"
START_HINT = "start it with `bash tests/clusters/oar-up.sh` (as root), stop it with `bash tests/clusters/oar-down.sh`"


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def oar_lab():
    """The running test OAR and a workspace of the job user; fails with the reason when something is missing."""
    if not (LAB / "shims" / "oarsub").exists():
        pytest.fail(f"the OAR test server is not set up ({LAB / 'shims'} missing): {START_HINT}")
    if not (_port_open(6666) and _port_open(6667)):
        pytest.fail(f"the OAR test server is not running (nothing on 127.0.0.1:6666/6667): {START_HINT}")
    try:
        user = pwd.getpwnam(JOB_USER)
    except KeyError:
        pytest.fail(f"job user {JOB_USER} does not exist: {START_HINT}")
    if os.geteuid() != 0 and os.geteuid() != user.pw_uid:
        pytest.fail(f"run these tests as root or as {JOB_USER}")
    home = Path(user.pw_dir) / "bt-tests"
    python = _job_user_python(home, user)
    return {"home": home, "python": python, "user": user}


def _job_user_argv(command: list, **extra_env) -> list:
    env = {"PATH": f"{LAB / 'shims'}:/usr/bin:/bin", "HOME": pwd.getpwnam(JOB_USER).pw_dir, "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT), "BENCHMARK_TRACKER_NODE_TYPES": str(CATALOG), "TZ": "UTC", **extra_env}
    prefix = [] if os.geteuid() != 0 else ["runuser", "-u", JOB_USER, "--"]
    return [*prefix, "env", "-i", *[f"{k}={v}" for k, v in env.items()], *command]


def _as_job_user(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_job_user_argv(command), capture_output=True, text=True, cwd="/", **kwargs)


def _job_user_python(home: Path, user) -> str:
    """A venv of Debian's python3.11 that sees this venv's packages: the job user cannot run root's pyenv."""
    venv = home / "venv"
    site = sysconfig.get_paths()["purelib"]
    pth = venv / "lib" / "python3.11" / "site-packages" / "_bt_shared_venv.pth"
    line = f"import site; site.addsitedir({site!r})\n"
    if not (pth.exists() and pth.read_text() == line):
        base = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
        if base is None:
            pytest.fail("no /usr/bin/python3.11 for the job user (apt-get install python3.11)")
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        made = _as_job_user([base, "-m", "venv", "--without-pip", "--clear", str(venv)])
        if made.returncode != 0:
            pytest.fail(f"cannot make the job user's venv: {made.stderr}")
        pth.write_text(line)
    probe = _as_job_user([str(venv / "bin" / "python"), "-c",
                          "import importlib.util as u, jobs.records, grid5000.kwollect, execo_g5k; "
                          "assert u.find_spec('tensorflow'), 'tensorflow'"])
    if probe.returncode != 0:
        pytest.fail(f"{JOB_USER} cannot run the project ({ROOT}) with the packages of {site}: these paths must be "
                    f"readable by other users (not under a 0700 home):\n{probe.stderr[-1500:]}")
    return str(venv / "bin" / "python")


@pytest.fixture
def workdir(oar_lab):
    folder = oar_lab["home"] / f"run-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    os.chown(folder, oar_lab["user"].pw_uid, oar_lab["user"].pw_gid)
    yield folder
    leftovers = [str(json.loads(p.read_text())["job_id"]) for p in folder.rglob("job.json")]
    if leftovers:  # never leave a job running on a deleted folder
        _as_job_user(["oardel", *leftovers], timeout=60)
        time.sleep(3)
    shutil.rmtree(folder, ignore_errors=True)


def bt(oar_lab, *args, timeout=300) -> subprocess.CompletedProcess:
    return _as_job_user([oar_lab["python"], "-m", "orchestrator.cli", *map(str, args)], timeout=timeout)


def write_sweep(folder: Path, name: str, oar: str, iterations: int = 3, repetitions: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(tiny_sweep(name, phases="[inference]", iterations=iterations, timeout=600, node_type="oar-local",
                               launcher="oar", repetitions=repetitions, idle_s=0) + f"oar: {oar}\n")
    os.chown(path, pwd.getpwnam(JOB_USER).pw_uid, -1)
    return path


def statuses(campaign: Path) -> list:
    return [json.loads((d / "status.json").read_text()) for d in sorted((campaign / "cells").iterdir())]


def oar_client(*args) -> subprocess.CompletedProcess:
    return _as_job_user([*args], timeout=60)


def oar_job_state(job_id: int) -> str:
    return json.loads(oar_client("oarstat", "-f", "-J", "-j", str(job_id)).stdout)[str(job_id)]["state"]


def test_a_sweep_runs_through_oar_with_kwollect_energy_and_resumes(oar_lab, workdir):
    with FakeKwollect() as kwollect:
        sweep = write_sweep(workdir, "oar_e2e", f"{{kwollect_url: '{kwollect.url}'}}")
        submitted = bt(oar_lab, "sweep", sweep, "--output", workdir / "results")
        assert submitted.returncode == 0, submitted.stderr + submitted.stdout
        assert "oar: submitting 1 cell(s) to cluster chifflet" in submitted.stderr
        assert "SUBMIT mobilenet_v2 inference 1.1 tensorflow on oar-local rep 0: OAR job" in submitted.stderr
        campaign = workdir / "results" / "oar_e2e"
        [status] = statuses(campaign)
        job = json.loads(next((campaign / "cells").glob("*/job.json")).read_text())
        assert status["launcher"] == "oar" and int(job["job_id"]) > 0 and job["attempt"] == 1  # the attempt's job
        status["job_id"] = job["job_id"]
        # 600 s + the Kwollect step (60 s) + the guard's margin (90 s)
        assert "-l \"host=1,walltime=0:12:30\"" in status["oarsub"] and "cluster='chifflet'" in status["oarsub"]
        # A second sweep while the job is queued or running submits nothing again.
        again = bt(oar_lab, "sweep", sweep, "--output", workdir / "results")
        assert again.returncode == 0 and "SUBMIT" not in again.stderr, again.stderr
        assert json.loads(next((campaign / "cells").glob("*/job.json")).read_text())["job_id"] == status["job_id"]
        waited = bt(oar_lab, "wait", campaign, "--poll", "2", "--timeout", "240", timeout=300)
        assert waited.returncode == 0, waited.stderr + waited.stdout
        # The Kwollect step is the guard's post-step, before it writes `done`: done means annotated.
        assert "external" in json.loads(next((campaign / "cells").glob("*/result.json")).read_text())["energy"]
        wait_for(lambda: oar_job_state(status["job_id"]) == "Terminated", 60, every=1, what="the job's end")
    [status] = statuses(campaign)
    assert status["state"] == "done" and status["host"] == socket.gethostname()
    cell = next((campaign / "cells").iterdir())
    result = json.loads((cell / "result.json").read_text())
    assert "external" in result["energy"], (cell / "job.log").read_text()[-2000:]
    bmc = result["energy"]["external"]["bmc"]
    duration = result["window"]["end_unix"] - result["window"]["start_unix"]
    assert bmc["joules"] == pytest.approx(100.0 * duration) and bmc["source"] == "bmc"
    assert bmc["ratio_to_software"] == pytest.approx(bmc["joules"] / result["energy"]["total_joules"])
    assert any("/sites/lille/metrics" in r["path"] for r in kwollect.requests)
    assert list(cell.glob("OAR.bt-*.stdout"))  # OAR's own output files sit in the cell folder
    assert f"PYTHONPATH={campaign}/.oar/code/" in (cell / "oar_job.sh").read_text()  # frozen code
    resumed = bt(oar_lab, "sweep", sweep, "--output", workdir / "results")
    assert resumed.returncode == 0 and "1 done and 0 failed cells skipped" in resumed.stderr


def test_a_deleted_running_job_and_a_cancelled_queued_one_fail_with_their_reason(oar_lab, workdir):
    sweep = write_sweep(workdir, "oar_kill", "{kwollect: false}", iterations=1_000_000, repetitions=2)
    submitted = bt(oar_lab, "sweep", sweep, "--output", workdir / "results")
    assert submitted.returncode == 0, submitted.stderr
    campaign = workdir / "results" / "oar_kill"
    # One runs (host=1: the other waits for the node).
    running = wait_for(lambda: [s for s in statuses(campaign) if s["state"] == "running"], 120, every=1,
                       what="a cell running")
    jobs = {d.name: json.loads((d / "job.json").read_text())["job_id"] for d in (campaign / "cells").iterdir()}
    running[0]["job_id"] = next(j for d, j in jobs.items() if json.loads(
        (campaign / "cells" / d / "status.json").read_text())["state"] == "running")
    deleted = oar_client("oardel", str(running[0]["job_id"]))
    assert deleted.returncode == 0, deleted.stderr
    waited = bt(oar_lab, "wait", campaign, "--poll", "2", "--timeout", "5", timeout=120)
    assert waited.returncode == 3  # the other cell is still open: `wait` gives up at its timeout
    # Judged once its cell has been silent for the grace period (its guard's last word may be on its way).
    shown = wait_for(lambda: (lambda s: s if s.returncode == 1 else None)(bt(oar_lab, "status", "-v", campaign)),
                     60, every=2, what="the deleted job's cell failed")
    assert f"OAR job {running[0]['job_id']} was deleted" in shown.stdout, shown.stdout
    cancelled = bt(oar_lab, "cancel", campaign, timeout=120)
    assert cancelled.returncode == 0 and "cancelled 1 open cell(s)" in cancelled.stdout, cancelled.stderr
    by_job = {jobs[d.name]: json.loads((d / "status.json").read_text()) for d in (campaign / "cells").iterdir()}
    assert all(s["state"] == "failed" for s in by_job.values())
    other = next(s for j, s in by_job.items() if j != running[0]["job_id"])
    assert other["cancelled"] and other["reason"] == "cancelled by the user"
    states = oar_client("oarstat", "-f", "-J", *[a for j in by_job for a in ("-j", str(j))])
    assert {r["state"] for r in json.loads(states.stdout).values()} == {"Error"}
    assert bt(oar_lab, "wait", campaign, "--poll", "1", "--timeout", "30").returncode == 1  # final: no waiting


def test_a_property_filter_matching_no_node_is_reported_clearly(oar_lab, workdir):
    sweep = write_sweep(workdir, "oar_nomatch", "{properties: {wattmeter: 'YES'}}")
    submitted = bt(oar_lab, "sweep", sweep, "--output", workdir / "results")
    assert submitted.returncode == 1
    message = ("no OAR resource matches the request: there are not enough resources for your request "
               "(-p \"cluster='chifflet' AND wattmeter='YES'\")")
    assert message in submitted.stderr
    [status] = statuses(workdir / "results" / "oar_nomatch")
    assert status["state"] == "failed" and message in status["reason"] and "oarnodes" in status["reason"]
