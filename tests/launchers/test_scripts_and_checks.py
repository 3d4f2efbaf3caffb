"""What launchers write into job scripts, and what they check before anything is written (no cluster needed).

The sbatch script is the one submitit really generates (`_make_sbatch_string`, the text sbatch reads); the
OAR script is the launcher's own. A control character in any value must never end a line of either.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grid5000 import launcher as oar
from orchestrator.errors import UserError
from orchestrator.launchers.slurm import SlurmLauncher, SlurmOptions, code_snapshot
from orchestrator.matrix import expand
from orchestrator.spec import parse_sweep
from tests.conftest import ROOT, tiny_sweep

SLURM_CATALOG = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"
INJECTED = "/tmp/x\ntouch /tmp/pwned\n#"


def slurm_spec(tmp_path):
    text = tiny_sweep("scripts", phases="[inference]", node_type="slurm-local", launcher="slurm")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return parse_sweep(text, path)


def oar_spec(tmp_path):
    text = tiny_sweep("scripts", phases="[inference]", node_type="grele", launcher="oar", timeout=3600)
    path = tmp_path / "oar.yaml"
    path.write_text(text)
    return parse_sweep(text, path)


def sbatch_script(launcher, workdir: Path, code: Path, job_name: str = "bt-x") -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    spec = launcher.spec
    cells = expand(spec).cells
    params = launcher.sbatch_parameters(launcher.signature(cells[0]), job_name, code, workdir)
    return _make_sbatch_string(command="python -u -m submitit.core._submit x", folder=workdir / "jobs", **params)


def test_the_generated_sbatch_script_keeps_every_directive_before_the_first_command(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(SLURM_CATALOG))
    launcher = SlurmLauncher(slurm_spec(tmp_path), SlurmOptions())
    launcher._site = {"max_array_size": 1001, "energy_accounting": False}
    script = sbatch_script(launcher, tmp_path / "camp" / "slurm", tmp_path / "code")
    lines = script.splitlines()
    first_command = next(i for i, line in enumerate(lines[1:], 1) if line and not line.startswith("#"))
    directives = [line for line in lines[:first_command] if line.startswith("#SBATCH")]
    assert {"#SBATCH --no-requeue", "#SBATCH --time=7", "#SBATCH --partition=debug", "#SBATCH --job-name=bt-x"} \
        <= set(directives)
    assert not any(line.startswith("#SBATCH") for line in lines[first_command:])


@pytest.mark.parametrize("where", ["workdir", "code", "job_name"])
def test_a_newline_in_any_sbatch_value_is_refused_not_written(tmp_path, monkeypatch, where):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(SLURM_CATALOG))
    launcher = SlurmLauncher(slurm_spec(tmp_path), SlurmOptions())
    launcher._site = {"max_array_size": 1001, "energy_accounting": False}
    values = {"workdir": tmp_path / "w", "code": tmp_path / "c", "job_name": "bt-x"}
    values[where] = Path(INJECTED) if where != "job_name" else "bt\ntouch /tmp/pwned"
    with pytest.raises(UserError, match="control character"):
        sbatch_script(launcher, values["workdir"], values["code"], values["job_name"])
    with pytest.raises(UserError, match="control character"):
        launcher.check_campaign(Path(INJECTED))


def test_a_newline_in_any_oar_value_is_refused_not_written(tmp_path):
    launcher = oar.OarLauncher(oar_spec(tmp_path), oar.OarOptions())
    cell = expand(launcher.spec).cells[0]
    safe = launcher.job_script(cell, tmp_path / "cell", tmp_path / "code")
    assert all(not line.startswith("touch") for line in safe.splitlines())
    for folder, code in ((Path(INJECTED), tmp_path / "code"), (tmp_path / "cell", Path(INJECTED))):
        with pytest.raises(UserError, match="control character"):
            launcher.job_script(cell, folder, code)
    with pytest.raises(UserError, match="control character"):
        launcher.submission(cell, Path(INJECTED))
    with pytest.raises(UserError, match="control character"):
        launcher.check_campaign(Path(INJECTED))


def cli(*args, path: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def test_oar_without_oarsub_writes_nothing(tmp_path):
    sweep = tmp_path / "oar.yaml"
    sweep.write_text(tiny_sweep("nooarsub", phases="[inference]", node_type="grele", launcher="oar", timeout=3600))
    done = cli("sweep", sweep, "--output", tmp_path / "out", path=str(tmp_path / "empty-bin"))
    assert done.returncode == 2 and "`oarsub` is not on PATH" in done.stderr, done.stderr
    assert "submitted" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


def test_a_campaign_folder_oar_refuses_is_refused_before_anything_is_written(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "oarsub").symlink_to("/bin/false")  # present; never run before the checks pass
    sweep = tmp_path / "oar.yaml"
    sweep.write_text(tiny_sweep("spaced", phases="[inference]", node_type="grele", launcher="oar", timeout=3600))
    out = tmp_path / "with space"
    done = cli("sweep", sweep, "--output", out, path=f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 2 and "cannot go into an OAR command line" in done.stderr, done.stderr
    assert not out.exists()


def test_sbatch_without_srun_is_refused_before_anything_is_written(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").symlink_to("/usr/bin/sbatch")
    sweep = tmp_path / "slurm.yaml"
    sweep.write_text(tiny_sweep("nosrun", phases="[inference]", node_type="local", launcher="slurm"))
    done = cli("sweep", sweep, "--output", tmp_path / "out", path=str(bin_dir))  # sbatch alone, no srun
    assert done.returncode == 2 and "`srun` is not on PATH" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_code_snapshot_is_the_frozen_copy_jobs_import(tmp_path):
    first = code_snapshot(tmp_path)
    assert (first / "jobs" / "records.py").exists() and (first / "orchestrator" / "lifecycle.py").exists()
    assert code_snapshot(tmp_path) == first  # the same code gives the same folder
