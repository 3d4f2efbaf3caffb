"""The campaign folder: results/<sweep name>/ with a frozen sweep, a manifest and one folder per cell.

    results/<name>/
      sweep.yaml            frozen copy of the sweep last run (older ones: sweep.<time>.yaml)
      manifest.json         the cells of that sweep, in execution order
      .lock                 held while a process writes the campaign
      cells/<id>/           cell.json, status.json, result.json, emissions.csv, job.log, job.json (the
                            attempt's job, written by the launcher side)
      cells/<id>/attempts/<n>/   outputs of earlier attempts, moved aside, never deleted

Every file is written atomically (temp file + rename).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from orchestrator.nodes import ROOT

from jobs.records import (CELL_FILE, EMISSIONS_FILE, JOB_FILE, LOG_FILE, RESULT_FILE, RESULT_SCHEMA_VERSION,
                          atomic_write_json, atomic_write_text, now_iso, read_json, read_status)
from orchestrator import __version__
from orchestrator.errors import UserError

MANIFEST_FILE = "manifest.json"
SWEEP_COPY = "sweep.yaml"
LOCK_FILE = ".lock"
ATTEMPT_OUTPUTS = (RESULT_FILE, EMISSIONS_FILE, LOG_FILE, JOB_FILE)


def snapshot_code(folder: Path, packages: tuple) -> Path:
    """Freeze the code queued jobs will import (they start later, maybe after a `git pull`).

    Copies the packages into folder/<content hash>/ once; the same code gives the same folder.
    """
    files = sorted(p for package in packages for p in (ROOT / package).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    target = Path(folder) / digest.hexdigest()[:12]
    if not target.is_dir():
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        for path in files:
            destination = staging / path.relative_to(ROOT)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        try:
            staging.rename(target)
        except OSError:  # another process made it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return target


def check_writable(folder: Path) -> None:
    """Fail early, before anything runs, when results could not be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None


class Campaign:
    def __init__(self, root: Path):
        # Absolute: jobs run in their cell folder, and schedulers start them elsewhere.
        self.root = Path(root).absolute()
        self.cells_dir = self.root / "cells"

    @property
    def name(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        return (self.root / MANIFEST_FILE).is_file()

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    @contextmanager
    def lock(self):
        """Exclusive, non-blocking: a second sweep on the same campaign stops at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"campaign {self.root} is in use by {holder}; wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n")
        handle.flush()
        try:
            yield self
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def is_locked(self) -> bool:
        """Whether a live process holds the lock (a sweep is running on this campaign)."""
        path = self.root / LOCK_FILE
        if not path.exists():
            return False
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def freeze_sweep(self, text: str) -> None:
        """Keep the sweep as run; a changed sweep keeps the previous copy beside it."""
        copy = self.root / SWEEP_COPY
        if copy.exists() and copy.read_text(encoding="utf-8") != text:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(copy.stat().st_mtime))
            copy.rename(self.root / f"sweep.{stamp}.yaml")
        if not copy.exists():
            atomic_write_text(copy, text)

    def write_manifest(self, sweep_name: str, sweep_text: str, launcher: str, cells: list) -> None:
        previous = self.manifest() if self.exists() else {}
        atomic_write_json(self.root / MANIFEST_FILE, {
            "campaign": sweep_name,
            "created_at": previous.get("created_at", now_iso()),
            "updated_at": now_iso(),
            "sweep_sha256": hashlib.sha256(sweep_text.encode()).hexdigest(),
            "launcher": launcher,
            "tool_version": __version__,
            "result_schema_version": RESULT_SCHEMA_VERSION,
            "cells": [{"id": c.id, **{k: c.params[k] for k in ("test", "subtest", "phase", "node_type",
                                                                "repetition")}} for c in cells],
        })

    def manifest(self) -> dict:
        try:
            return read_json(self.root / MANIFEST_FILE)
        except FileNotFoundError:
            raise UserError(f"no campaign at {self.root} (no {MANIFEST_FILE}); run a sweep first") from None
        except ValueError as exc:
            raise UserError(f"{self.root / MANIFEST_FILE} is corrupt: {exc}") from None

    def cell_ids(self) -> list:
        return [c["id"] for c in self.manifest()["cells"]]

    def write_cell(self, cell, extra: dict) -> None:
        folder = self.cell_dir(cell.id)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"id": cell.id, "campaign": self.name, "schema_version": RESULT_SCHEMA_VERSION,
                  "params": cell.params, **extra}
        path = folder / CELL_FILE
        if not path.exists() or read_json(path) != record:
            atomic_write_json(path, record)

    def status(self, cell_id: str) -> dict:
        try:
            return read_status(self.cell_dir(cell_id))
        except ValueError as exc:  # corrupt status: treat as failed, say why
            return {"state": "failed", "reason": str(exc), "attempts": 0}

    def set_aside_outputs(self, cell_id: str, attempt: int) -> None:
        """Move an earlier attempt's outputs to attempts/<n>/ so a rerun overwrites nothing."""
        folder = self.cell_dir(cell_id)
        present = [name for name in ATTEMPT_OUTPUTS if (folder / name).exists()]
        if not present:
            return
        target = folder / "attempts" / str(attempt)
        target.mkdir(parents=True, exist_ok=True)
        for name in present:
            shutil.move(str(folder / name), str(target / name))
