"""Storage failing under a running local sweep: a full disk, the campaign folder deleted. Real cells, real CLI.

The full disk is a real tmpfs (mounting it needs root: marked `cluster`, like the other tests that need the
services `make test` starts as root).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import run_cli, tiny_sweep, wait_for
from tests.launchers.test_local_run_control import running, start_cli


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root: run `make test` (or pytest) as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.cluster
def test_disk_full_fails_the_cell_names_the_path_and_keeps_the_state_readable(sweep_file, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * (2048 - 48) * 1024)  # leave about 48 KiB
    sweep = sweep_file(tiny_sweep("full"))
    done = run_cli("sweep", sweep, "--output", small_disk / "out", timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "No space left on device" in done.stderr and str(small_disk / "out" / "full") in done.stderr
    assert "rerun the same command to resume" in done.stderr
    states = {}
    for path in (small_disk / "out" / "full").glob("cells/*/status.json"):
        states[path.parent.name] = json.loads(path.read_text())  # readable, every one
    assert "failed" in {s["state"] for s in states.values()}
    assert not {s["state"] for s in states.values()} & {"submitted", "running"}  # none left in flight
    failed = next(s for s in states.values() if s["state"] == "failed")
    assert "No space left on device" in failed["reason"]
    status = run_cli("status", small_disk / "out" / "full")
    assert status.returncode == 1 and "failed" in status.stdout


def test_campaign_folder_deleted_under_a_running_sweep(sweep_file, tmp_path):
    sweep = sweep_file(tiny_sweep("gone", iterations=60))
    out = tmp_path / "results"
    cli = start_cli("sweep", sweep, "--output", out)
    wait_for(lambda: running(out / "gone"), what="a running cell")
    shutil.rmtree(out / "gone")
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 1, err
    assert "Traceback" not in err and "is gone (was the campaign folder deleted or moved" in err
