"""Who may import and write what: the boundaries issue #10 draws, checked on the source itself."""
from __future__ import annotations

import ast
import configparser

import pytest

from orchestrator.errors import UserError
from orchestrator.launchers import LAUNCHERS, launcher_class, registry
from tests.conftest import ROOT

# Each launcher and the modules that are its own (Slurm's job side).
LAUNCHER_MODULES = {
    "local": {"orchestrator.launchers.local"},
    "slurm": {"orchestrator.launchers.slurm", "orchestrator.launchers.slurm_job"},
    "oar": {"grid5000.launcher"},
}
STATUS_WRITERS = {"jobs/records.py", "orchestrator/lifecycle.py"}


def module_path(module: str):
    return ROOT / (module.replace(".", "/") + ".py")


def imports(path) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_jobs_import_nothing_from_the_orchestrator():
    for path in sorted((ROOT / "jobs").glob("*.py")):
        assert not {m for m in imports(path) if m.split(".")[0] == "orchestrator"}, path


def test_no_launcher_imports_another():
    for name, own in LAUNCHER_MODULES.items():
        others = set().union(*(m for n, m in LAUNCHER_MODULES.items() if n != name))
        for module in own:
            assert not imports(module_path(module)) & others, f"{module} imports another launcher"


def test_status_files_are_written_only_by_the_record_schema_and_the_lifecycle():
    writers = ("atomic_write", "atomic_write_json", "atomic_write_text", "write_text", "open")
    offenders = []
    for path in sorted([*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("grid5000/*.py")]):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            text = ast.unparse(node)
            if func in writers and ("STATUS_FILE" in text or "status.json" in text) and rel not in STATUS_WRITERS:
                offenders.append(f"{rel}:{node.lineno}")
            if func == "update_status" and len(node.args) > 1 and ast.unparse(node.args[1]) == "'submitted'" \
                    and rel != "orchestrator/lifecycle.py":  # the only writer of submitted
                offenders.append(f"{rel}:{node.lineno} writes submitted")
    assert not offenders


def test_launchers_are_registered_by_entry_point_and_the_built_in_table_matches():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = dict(line.split(" = ") for line in
                    config["options.entry_points"]["benchmark_tracker.launchers"].strip().splitlines())
    assert declared == LAUNCHERS  # the fallback for a plain checkout says the same as the package metadata
    assert {"local", "slurm", "oar"} <= set(registry())
    for name, modules in LAUNCHER_MODULES.items():
        assert launcher_class(name).__module__ in modules
    with pytest.raises(UserError, match="unknown launcher 'pbs'; known launchers: local, oar, slurm"):
        launcher_class("pbs")
