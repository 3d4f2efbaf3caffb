"""The install declares its package data: no setuptools warnings, templates and reference data in the wheel."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_builds_without_warnings_and_carries_its_data(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "results", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Warning" not in output and "absent from the `packages`" not in output, output[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"orchestrator/templates/report.html.j2", "orchestrator/reference_data/chifflet-2022.csv",
            "orchestrator/reference_data/chifflet-2022.yaml", "orchestrator/node_types.yaml"} <= names
