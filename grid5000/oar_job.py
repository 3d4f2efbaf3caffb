"""Job side of the OAR launcher: what the guard asks OAR when a signal reaches a cell's job on the node.

The job script (grid5000/launcher.py `job_script`) runs `python -m jobs.guard <cell> --explain grid5000.oar_job`;
the guard calls `explain_signal` at once when SIGTERM arrives (OAR's checkpoint signal before the walltime, or
`oardel`). Standard library only, and bounded: a node without the OAR clients gives the guard's own reason.
"""
from __future__ import annotations

import json
import os
import subprocess

QUERY_TIMEOUT_S = 10


def explain_signal(signum: int) -> dict | None:
    job_id = os.environ.get("OAR_JOB_ID") or os.environ.get("OAR_JOBID")
    if not job_id or not job_id.isdigit():
        return None
    try:
        done = subprocess.run(["oarstat", "-f", "-J", "-j", job_id], capture_output=True, text=True,
                              timeout=QUERY_TIMEOUT_S)
        record = json.loads(done.stdout).get(job_id) or {}
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return None
    kinds = {e.get("type") for e in record.get("events") or []}
    if "FRAG_JOB_REQUEST" in kinds:
        return {"cancelled": True, "reason": f"OAR job {job_id} was deleted (oardel) while running"}
    if kinds & {"CHECKPOINT", "CHECKPOINT_SUCCESSFULL", "WALLTIME"}:
        return {"timed_out": True, "reason": f"OAR job {job_id} reached its walltime (OAR's checkpoint signal)"}
    return None
