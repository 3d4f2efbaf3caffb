"""Who may import and write what: the boundaries issue #10 draws, checked on the source itself."""
from __future__ import annotations

import ast
import configparser
import inspect

import pytest

from orchestrator import launchers
from orchestrator.errors import UserError
from orchestrator.launchers import BUILT_IN, Launcher, declared_in_setup_cfg, launcher_class, registry
from tests.conftest import ROOT

# Each launcher and the modules that are its own (the job sides of Slurm and OAR).
LAUNCHER_MODULES = {
    "local": {"orchestrator.launchers.local"},
    "slurm": {"orchestrator.launchers.slurm", "orchestrator.launchers.slurm_job"},
    "oar": {"grid5000.launcher", "grid5000.oar_job"},
}
# status.json: the record schema's helpers (update_status...) are called by the lifecycle (core side), the guard
# (node side) and the job itself (its running and failed); nothing else writes it, by any means.
STATUS_WRITERS = {"jobs/records.py", "orchestrator/lifecycle.py"}
# jobs/workers.py is the job's own multi-worker part (issue #15): it records its workers' ends, on the node.
STATUS_HELPER_CALLERS = {"orchestrator/lifecycle.py", "jobs/guard.py", "jobs/run.py", "jobs/records.py",
                         "jobs/workers.py"}
INTERFACE = {"check", "check_campaign", "submit", "query", "cancel", "recover", "max_retries"}


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


def sources():
    for path in sorted([*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("jobs/**/*.py"), *ROOT.glob("grid5000/*.py")]):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def test_jobs_import_nothing_from_the_orchestrator():
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        assert not {m for m in imports(path) if m.split(".")[0] == "orchestrator"}, path


def test_no_launcher_imports_another():
    for name, own in LAUNCHER_MODULES.items():
        others = set().union(*(m for n, m in LAUNCHER_MODULES.items() if n != name))
        for module in own:
            assert not imports(module_path(module)) & others, f"{module} imports another launcher"


def test_status_files_are_written_only_by_the_lifecycle_the_guard_and_the_job():
    writers = ("atomic_write", "atomic_write_json", "atomic_write_text", "write_text", "write_bytes", "open")
    helpers = ("update_status", "write_submitted", "mark_submitted")
    offenders = []
    for rel, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            text = ast.unparse(node)
            if func in writers and ("STATUS_FILE" in text or "status.json" in text) and rel not in STATUS_WRITERS:
                offenders.append(f"{rel}:{node.lineno} writes status.json")
            if func in helpers and not isinstance(node.func, ast.Attribute) and rel not in STATUS_HELPER_CALLERS:
                offenders.append(f"{rel}:{node.lineno} calls {func}")  # lifecycle.mark_submitted(...) is the core's
            if func == "update_status" and len(node.args) > 1 and ast.unparse(node.args[1]) == "'submitted'" \
                    and rel != "orchestrator/lifecycle.py":  # the only writer of submitted
                offenders.append(f"{rel}:{node.lineno} writes submitted")
    assert not offenders


def test_launchers_write_no_status_and_scheduler_failures_come_from_the_lifecycle():
    for modules in LAUNCHER_MODULES.values():
        for module in modules:
            names = imports(module_path(module))
            assert not {n for n in names if n.endswith(".update_status")}, module


def test_the_launcher_interface_is_small_and_has_no_settle():
    public = {name for name, _ in inspect.getmembers(Launcher) if not name.startswith("_")}
    public -= {"name", "blocking", "options_model", "allow_concurrent"}
    assert public == INTERFACE
    assert Launcher.__abstractmethods__ == {"check", "submit", "query", "cancel"}
    for name in ("local", "slurm", "oar"):
        cls = launcher_class(name)
        assert not hasattr(cls, "settle") and not hasattr(cls, "refresh") and not hasattr(cls, "launch"), cls


def test_the_core_names_no_site():
    for path in [*ROOT.glob("orchestrator/launchers/*.py"), ROOT / "orchestrator" / "lifecycle.py",
                 ROOT / "orchestrator" / "sweep.py", ROOT / "orchestrator" / "follow.py"]:
        assert "grid5000" not in path.read_text().lower(), path


def test_launchers_come_from_entry_points_first_and_setup_cfg_without_metadata(monkeypatch):
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = dict(line.split(" = ") for line in
                    config["options.entry_points"]["benchmark_tracker.launchers"].strip().splitlines())
    assert declared_in_setup_cfg() == declared
    assert {"local", "slurm", "oar"} <= set(registry())
    for name, modules in LAUNCHER_MODULES.items():
        assert launcher_class(name).__module__ in modules
    with pytest.raises(UserError, match="unknown launcher 'pbs'; known launchers: local, oar, slurm"):
        launcher_class("pbs")

    import importlib.metadata

    class EntryPoint:
        name, value = "pbs", "tests.launchers.test_structure:Launcher"

    # Installed entry points win: a plug-in's line is all it takes (and nothing overrides it).
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [EntryPoint()])
    assert registry() == {"pbs": "tests.launchers.test_structure:Launcher"}
    # No package metadata (a plain checkout): the checkout's setup.cfg, over the core's own launchers.
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    assert registry() == {**BUILT_IN, **declared}
    monkeypatch.setattr(launchers, "declared_in_setup_cfg", lambda: {})
    assert registry() == BUILT_IN and "oar" not in BUILT_IN
