"""The per-node launch of a `nodes: N` OAR cell: one jobs.workers task per host, the others through oarsh.

`oarsh` and the interpreter are fakes here (OAR's oarsh needs its cgroups job manager and several
hosts): the fake oarsh does what oarsh/ssh do with their arguments (join them with spaces and hand
them to the remote shell), so the test checks the quoting that a real remote shell would parse.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from grid5000.launcher import OarLauncher

FAKE_OARSH = '#!/bin/sh\nhost="$1"; shift\nexec env FAKE_HOST="$host" sh -c "$*"\n'
FAKE_PYTHON = '#!/bin/sh\nprintf "%s\\n" "${FAKE_HOST:-here}" "$PWD" "$PYTHONPATH" "$@" > "$RECORDS/$$.args"\n'


def test_one_task_per_host_rank_0_here_the_others_through_oarsh(tmp_path):
    folder = tmp_path / "cell $(touch PWNED) 'x'"
    folder.mkdir()
    code = tmp_path / "code dir"
    bin_dir, records = tmp_path / "bin", tmp_path / "records"
    bin_dir.mkdir(), records.mkdir()
    for name, text in (("oarsh", FAKE_OARSH), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\nn1\nn2\nn3\nn3\n")  # OAR lists a host once per core
    lines = OarLauncher.per_node_lines(folder, str(bin_dir / "python"), code, 3)
    script = "\n".join(["cd " + shlex.quote(str(folder)), *lines, "wait"]) + "\n"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OAR_NODEFILE=str(nodefile), RECORDS=str(records))
    done = subprocess.run(["sh", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = sorted(p.read_text().splitlines() for p in records.iterdir())
    hosts = str(folder / "hosts")
    assert sorted(c[0] for c in calls) == ["here", "n2", "n3"]
    for host, cwd, pythonpath, *argv in calls:
        rank = {"here": "0", "n2": "1", "n3": "2"}[host]
        assert argv == ["-m", "jobs.workers", str(folder), rank, hosts]
        assert Path(cwd) == folder and (host == "here" or pythonpath == str(code))
    assert Path(hosts).read_text() == "n1\nn2\nn3\n"
    assert not any(p.name == "PWNED" for p in tmp_path.rglob("*"))


def test_too_few_hosts_fail_before_any_launch(tmp_path):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\n")
    lines = OarLauncher.per_node_lines(tmp_path, "/bin/false", tmp_path, 2)
    done = subprocess.run(["sh", "-c", "\n".join(lines)], env=dict(os.environ, OAR_NODEFILE=str(nodefile)),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 96
    assert "OAR gave 1 host(s), the cell needs 2" in (tmp_path / "job.log").read_text()
