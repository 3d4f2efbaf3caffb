"""Slurm through submitit: one isolated job per cell, one job array per resource signature.

`sweep` submits and returns; `status`, `wait` and `cancel` reattach later from
the campaign folder. What each part does:

- Resources are data: a `slurm:` block per node type in a node-type catalog,
  overridden by the sweep's `slurm:` section (top level, then
  `slurm.node_types.<name>`). Exclusive nodes by default (energy validity).
- Cells that share a resource signature go into one array, split at the
  site's MaxArraySize, always with an explicit throttle (`array_parallelism`).
- Before sbatch, a submission record (slurm/submissions/<token>.json) lists
  the cells in array order; the Slurm job name carries the token. A sweep
  killed mid-submission is repaired by the next one (`recover`): it finds the
  job by name, adopts it, and submits only the rest. A hung sbatch is bounded.
- `query`: one squeue call for all open cells; sacct only for the jobs squeue no
  longer knows; `scontrol` when sacct is unavailable; each ended job with
  Slurm's reason (cancelled, timeout, out of memory, node failure...). What to
  do with it (the grace rule, marking failed, retries) is the core's
  (orchestrator/lifecycle.py); this module writes no status.
- Slurm's requeue is off (`--no-requeue`); retries are the core's (`max_retries`),
  the cell keeps its id.
- On the node, the task runs the guard every launcher uses (slurm_job.py).
- The job runs the frozen copy of the code made at submit time
  (slurm/code/<hash>/) with the project's interpreter, which must exist at the
  same path on the compute nodes (the job script checks and says so).
"""
from __future__ import annotations

import math
import os
import shlex
import shutil
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, \
    field_validator

from jobs.records import atomic_write_json, now_iso, read_json
from orchestrator.errors import UserError
from orchestrator.launchers import (GUARD_MARGIN_S, JobState, Launcher, QueryFailed, Refused, SchedulerUnreachable,
                                    SubmissionStopped, command_timeout_s, refuse_control_characters)
from orchestrator import lifecycle
from orchestrator.nodes import node_types
from orchestrator.store import snapshot_code

# Values that end up in #SBATCH lines: no whitespace, quotes or shell syntax, ever.
_SAFE = r"^[A-Za-z0-9_.,:+@%=/-]+$"
_CONSTRAINT = r"^[A-Za-z0-9_.,:+@%=*&|!\[\]()-]+$"
_PATH = r"^/[A-Za-z0-9_.,:+@%=/-]+$"
SafeStr = Annotated[StrictStr, Field(pattern=_SAFE, max_length=200)]
ConstraintStr = Annotated[StrictStr, Field(pattern=_CONSTRAINT, max_length=500)]
PathStr = Annotated[StrictStr, Field(pattern=_PATH, max_length=1000)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveNumber = Annotated[StrictFloat | StrictInt, Field(gt=0)]

SLURM_DIR = "slurm"          # campaign/slurm/: jobs/ (submitit), submissions/, code/<hash>/
TMP_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm")
SQUEUE_ALIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
# Final Slurm states -> (reason, retryable: the cell's fault or the user's, or the infrastructure's).
FINAL_REASONS = {
    "CANCELLED": ("cancelled (scancel) before writing a result", False),
    "TIMEOUT": ("timeout: over its Slurm time limit, killed before writing a result", False),
    "OUT_OF_MEMORY": ("out of memory: killed by Slurm before writing a result", False),
    "NODE_FAIL": ("node failure: the node stopped responding while the job ran", True),
    "BOOT_FAIL": ("node boot failure before the job started", True),
    "PREEMPTED": ("preempted by Slurm before writing a result", True),
    "DEADLINE": ("deadline reached before it could run", False),
    "FAILED": ("the job failed before writing a result", True),
    "COMPLETED": ("the job ended without writing a final status", True),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlurmResources(_Strict):
    """What a node type asks Slurm for. All optional: layers override each other."""

    partition: SafeStr | None = None
    constraint: ConstraintStr | None = None
    gres: SafeStr | None = None
    gpus: SafeStr | PositiveInt | None = None
    qos: SafeStr | None = None
    account: SafeStr | None = None
    time_limit_min: PositiveNumber | None = None   # default: the sweep's timeout_s
    exclusive: StrictBool | None = None
    cpus_per_task: PositiveInt | None = None
    mem_gb: PositiveNumber | None = None


class SlurmOptions(SlurmResources):
    """The sweep's `slurm:` section."""

    array_parallelism: PositiveInt = 8
    ntasks_per_node: PositiveInt | None = None  # scale (#15): workers per node of a multi-worker cell (default 1)
    max_array_size: PositiveInt | None = None   # below the site's MaxArraySize, never above
    use_arrays: StrictBool = True
    max_retries: NonNegativeInt | None = None      # default: the sweep's max_retries
    hold: StrictBool = False                    # submit held; `scontrol release` starts them
    python: PathStr | None = None               # the interpreter on the compute nodes (default: this one)
    node_types: dict[StrictStr, SlurmResources] = {}

    @field_validator("node_types")
    @classmethod
    def _known(cls, value):
        known = node_types()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown node type(s): {', '.join(unknown)}; "
                             f"valid node types: {', '.join(sorted(known))}")
        return value


RESOURCE_KEYS = tuple(SlurmResources.model_fields)


def _q(value) -> str:
    return shlex.quote(str(value))


# What sbatch/squeue print when the controller does not answer (slurm_protocol_defs / slurm_errno strings).
UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|Connection refused|"
                         r"Zero Bytes were transmitted or received")


def run_command(args: list, timeout: float = 60) -> subprocess.CompletedProcess:
    """A scheduler command, as an argument list: no shell ever sees a sweep value. Bounded: a hung one is reported."""
    timeout = command_timeout_s(timeout)
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", f"{args[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"{args[0]}: no answer in {timeout:g} s")


def slurm_time(minutes: float) -> int:
    """Slurm's --time in whole minutes (Slurm rounds limits up to minutes anyway)."""
    return max(1, math.ceil(minutes - 1e-9))


def base_job_id(job_id: str) -> str:
    return str(job_id).split("_", 1)[0].split(".", 1)[0]


def code_snapshot(campaign_root: Path) -> Path:
    return snapshot_code(campaign_root / SLURM_DIR / "code", ("jobs", "orchestrator"))


@dataclass(frozen=True)
class Signature:
    """Everything that goes into a job's sbatch header; one array per signature."""

    items: tuple

    @property
    def params(self) -> dict:
        return dict(self.items)

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.items if v is not None)


class SlurmLauncher(Launcher):
    name = "slurm"
    blocking = False
    options_model = SlurmOptions

    def __init__(self, spec, options: SlurmOptions | None = None):
        super().__init__(spec, options or SlurmOptions())
        self.python = self.options.python or sys.executable
        self._site = None
        self._records = {}

    # --- resources ----------------------------------------------------------------

    def resources(self, node_type: str) -> dict:
        """Catalog `slurm:` block < sweep `slurm:` < sweep `slurm.node_types.<name>`; exclusive by default."""
        node = node_types()[node_type]
        block = node.extra.get("slurm") or {}
        try:
            catalog = SlurmResources.model_validate(block)
        except ValidationError as exc:
            raise UserError(f"node type {node_type}: invalid `slurm:` block in its catalog",
                            [f"slurm.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
        merged = {"exclusive": True}
        for layer in (catalog, self.options, self.options.node_types.get(node_type)):
            if layer is not None:
                merged.update({k: getattr(layer, k) for k in RESOURCE_KEYS if getattr(layer, k) is not None})
        if "time_limit_min" not in merged:  # the sweep's timeout_s and the guard's margin, in whole minutes
            merged["time_limit_min"] = slurm_time((self.spec.sweep.timeout_s + GUARD_MARGIN_S) / 60)
        return merged

    def signature(self, cell) -> Signature:
        from orchestrator import scale  # scale (#15): a multi-worker cell's nodes and tasks are part of it

        layout = scale.slurm_layout(cell.params, self.options.ntasks_per_node or 1,
                                    node_types()[cell.node_type].gpu_count)
        return Signature(tuple(sorted({**self.resources(cell.node_type), **layout}.items())))

    def sbatch_parameters(self, signature: Signature, job_name: str, code: Path, workdir: Path) -> dict:
        r = signature.params
        extra = {"no_requeue": True, "chdir": str(workdir)}
        if self.options.hold:
            extra["hold"] = True
        if r.get("gpus") is not None:
            extra["gpus"] = r["gpus"]
        params = {
            "job_name": job_name,
            "time": slurm_time(r["time_limit_min"]),
            "nodes": r.get("nodes", 1),  # scale (#15): with ntasks_per_node, one srun step runs a task per worker
            "ntasks_per_node": r.get("ntasks_per_node"),
            "gpus_per_node": r.get("gpus_per_node"),
            "partition": r.get("partition"),
            "constraint": r.get("constraint"),
            "gres": r.get("gres"),
            "qos": r.get("qos"),
            "account": r.get("account"),
            "cpus_per_task": r.get("cpus_per_task"),
            "mem": None if r.get("mem_gb") is None else f"{max(1, int(r['mem_gb'] * 1024))}MB",
            "exclusive": True if r.get("exclusive") else None,
            "array_parallelism": self.options.array_parallelism,
            "signal_delay_s": 60,
            "stderr_to_stdout": True,
            "additional_parameters": extra,
            "setup": self.setup_lines(code),
        }
        params = {k: v for k, v in params.items() if v is not None}
        # Defense in depth (the sweep's values are validated at load): nothing may end a line of the script.
        refuse_control_characters({**{f"sbatch {k}": v for k, v in params.items() if k != "additional_parameters"},
                                   **{f"sbatch {k}": v for k, v in extra.items()}}, "an sbatch script")
        return params

    def setup_lines(self, code: Path) -> list:
        """Lines of the job script before srun; every value quoted."""
        missing = (f"benchmark-tracker: the interpreter {self.python} does not exist on this compute node; "
                   "install the project's environment at the same path on the nodes (shared filesystem), "
                   "or set slurm.python in the sweep")
        return [
            f"export PYTHONPATH={_q(code)}${{PYTHONPATH:+:$PYTHONPATH}}",
            f"if [ ! -x {_q(self.python)} ]; then echo {_q(missing)} \"(node $(hostname))\" >&2; exit 3; fi",
        ]

    # --- site facts ---------------------------------------------------------------

    def site(self) -> dict:
        """MaxArraySize and energy accounting, from one `scontrol show config`."""
        if self._site is None:
            out = run_command(["scontrol", "show", "config"], timeout=30)
            config = {}
            for line in out.stdout.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    config[key.strip()] = value.strip()
            try:
                max_array = int(config.get("MaxArraySize", "1001"))
            except ValueError:
                max_array = 1001
            energy = config.get("AcctGatherEnergyType", "acct_gather_energy/none")
            self._site = {"max_array_size": max_array,
                          "energy_accounting": bool(energy) and not energy.endswith("/none") and energy != "(null)"}
        return self._site

    def chunk_size(self) -> int:
        # Array indices go 0..N-1 and must stay below MaxArraySize.
        site_max = max(1, self.site()["max_array_size"] - 1)
        return min(site_max, self.options.max_array_size or site_max)

    # --- check ----------------------------------------------------------------------

    def check_campaign(self, root) -> None:
        refuse_control_characters({"campaign folder": root, "slurm.python": self.python}, "an sbatch script")

    def check(self, cells: list) -> None:
        for command in ("sbatch", "srun"):  # the job script submitit writes runs the task through srun
            if not shutil.which(command):
                raise UserError(f"launcher slurm: `{command}` is not on PATH",
                                ["run the sweep from a Slurm login node with the Slurm client commands "
                                 "(sbatch, srun, squeue, sacct), or `launcher: local` on this machine"])
        if not os.access(self.python, os.X_OK):
            raise UserError(f"launcher slurm: the interpreter {self.python} does not exist or cannot run",
                            ["jobs run the project's interpreter at the same path on the compute nodes; "
                             "set slurm.python to one that exists there"])
        signatures = {}
        for cell in cells:
            signatures.setdefault(self.signature(cell), cell.node_type)
        for signature, node_type in signatures.items():
            self._test_only(signature, node_type)

    def _test_only(self, signature: Signature, node_type: str) -> None:
        """`sbatch --test-only`: an unknown partition, constraint, account... stops the sweep before anything."""
        r = signature.params
        args = ["sbatch", "--test-only", f"--nodes={r.get('nodes', 1)}", f"--time={slurm_time(r['time_limit_min'])}",
                "--job-name=bt-check", "--output=/dev/null"]
        for key, flag in (("partition", "--partition"), ("constraint", "--constraint"), ("gres", "--gres"),
                          ("gpus", "--gpus"), ("qos", "--qos"), ("account", "--account"),
                          ("cpus_per_task", "--cpus-per-task"), ("ntasks_per_node", "--ntasks-per-node"),
                          ("gpus_per_node", "--gpus-per-node")):
            if r.get(key) is not None:
                args.append(f"{flag}={r[key]}")
        if r.get("mem_gb") is not None:
            args.append(f"--mem={max(1, int(r['mem_gb'] * 1024))}M")
        if r.get("exclusive"):
            args.append("--exclusive")
        args.append("--wrap=true")
        done = run_command(args, timeout=60)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().replace("sbatch: error: ", "")
            if done.returncode == 124 or UNREACHABLE.search(message):  # not a refusal: nobody answered
                raise SchedulerUnreachable(f"Slurm is unreachable: {message}",
                                           ["nothing was submitted; run the same command again once Slurm answers"])
            raise UserError(f"Slurm refuses the resources of node type {node_type}: {message}",
                            [f"requested: {signature.describe()}",
                             "fix the node type's `slurm:` block or the sweep's `slurm:` section; "
                             "nothing was submitted"])

    # --- launch ---------------------------------------------------------------------

    def submit(self, campaign, cells: list, progress) -> dict:
        """One array per resource signature (chunks of chunk_size()); {cell id: Slurm job id}."""
        stream = progress.stream
        self._warn_shared_fs(campaign, stream)
        code = code_snapshot(campaign.root)
        groups = {}
        for cell in cells:
            groups.setdefault(self.signature(cell), []).append(cell)
        ids = {}
        for signature, group in groups.items():
            ids.update(self.submit_group(campaign, signature, group, code, stream, ids))
        stream.write(f"submitted {len(ids)} cell(s) to Slurm in {campaign.root}; follow with "
                     f"`benchmark-tracker status {_q(campaign.root)}` or `wait`\n")
        stream.flush()
        return ids

    def _warn_shared_fs(self, campaign, stream) -> None:
        root = str(Path(campaign.root).resolve())
        if root.startswith(TMP_PREFIXES):
            stream.write(f"warning: campaign folder {root} is under a node-local temporary directory; the compute "
                         "nodes must see it at the same path (a shared filesystem), or jobs fail without logs\n")
        if str(Path(self.python)).startswith(TMP_PREFIXES):
            stream.write(f"warning: the interpreter {self.python} is under a temporary directory; it must exist at "
                         "the same path on the compute nodes\n")

    def submit_group(self, campaign, signature: Signature, cells: list, code: Path, stream, before: dict) -> dict:
        """Submit cells sharing one signature, in arrays of at most chunk_size().

        Per chunk: statuses (submitted, with the submission token and array index) and the submission
        record are written *before* sbatch; after it, only the record gets the job id. No cell file is
        written while its job may already be writing it.
        """
        import submitit

        folder = campaign.root / SLURM_DIR / "jobs"
        records = campaign.root / SLURM_DIR / "submissions"
        folder.mkdir(parents=True, exist_ok=True)
        records.mkdir(parents=True, exist_ok=True)
        energy = self.site()["energy_accounting"]
        size = self.chunk_size() if self.options.use_arrays else 1
        submitted = {}
        for start in range(0, len(cells), size):
            chunk = cells[start:start + size]
            token = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            record_path = records / f"{token}.json"
            record = {"token": token, "job_name": f"bt-{token}", "cells_root": str(campaign.cells_dir),
                      "cells": [c.id for c in chunk], "python": self.python, "code": str(code),
                      "energy_accounting": energy, "time_limit_min": slurm_time(signature.params["time_limit_min"]),
                      "signature": signature.describe(), "created_at": now_iso(), "created": time.time(),
                      "ntasks_per_node": signature.params.get("ntasks_per_node"),  # scale (#15)
                      "state": "submitting", "job_id": None, "host": socket.gethostname(), "pid": os.getpid()}
            atomic_write_json(record_path, record)  # first: from here on, a crash is recoverable
            array = len(chunk) > 1
            now = now_iso()
            for index, cell in enumerate(chunk):
                previous = campaign.status(cell.id)
                lifecycle.write_submitted(campaign.cell_dir(cell.id), previous, now,
                                          attempts=previous.get("attempts", 0) + 1, launcher=self.name,
                                          submission=token, array_index=index if array else None,
                                          host=socket.gethostname())
            executor = submitit.SlurmExecutor(folder=folder, python=_q(self.python), max_num_timeout=0)
            executor.update_parameters(**self.sbatch_parameters(signature, record["job_name"], code,
                                                                campaign.root / SLURM_DIR))
            try:
                job_id = base_job_id(_bounded_sbatch(executor, str(record_path), len(chunk) if array else None))
            except SbatchHung as exc:  # the record stays `submitting`: the next run adopts a job, or abandons it
                raise SchedulerUnreachable(f"Slurm is unreachable: {exc}",
                                           [f"{len({**before, **submitted})} cell(s) were submitted before these; "
                                            "none after. Rerun the same command when Slurm answers again"],
                                           submitted={**before, **submitted}) from None
            except Exception as exc:  # sbatch refused: say what Slurm said, submit nothing more
                message = str(exc).strip().replace("sbatch: error: ", "")
                record["state"], record["error"] = "refused", message
                atomic_write_json(record_path, record)
                done = {**before, **submitted}
                raise SubmissionStopped(f"Slurm refused the submission of {len(chunk)} cell(s): {message}",
                                        [f"requested: {signature.describe()}",
                                         f"{len(done)} cell(s) were submitted before these; nothing after"],
                                        submitted=done,
                                        refused={c.id: Refused(f"Slurm refused the job: {message}") for c in chunk}
                                        ) from None
            record["state"], record["job_id"], record["submitted_at"] = "submitted", job_id, now_iso()
            atomic_write_json(record_path, record)
            self._records[token] = record
            submitted.update({c.id: f"{job_id}_{i}" if array else job_id for i, c in enumerate(chunk)})
            stream.write(f"submitted {len(chunk)} cell(s) as Slurm job {job_id}"
                         f"{f' (array, {self.options.array_parallelism} at a time)' if array else ''}: "
                         f"{signature.describe()}\n")
            stream.flush()
        return submitted

    # --- submission records -----------------------------------------------------------

    def record(self, campaign, token: str) -> dict | None:
        if token not in self._records:
            try:
                self._records[token] = read_json(campaign.root / SLURM_DIR / "submissions" / f"{token}.json")
            except (OSError, ValueError):
                self._records[token] = None
        return self._records[token]

    def job_id(self, campaign, status: dict) -> str | None:
        """A cell's Slurm job id (`<array>_<index>` for an array task), from its submission record."""
        record = self.record(campaign, status.get("submission") or "")
        if not record or not record.get("job_id"):
            return None
        index = status.get("array_index")
        return f"{record['job_id']}_{index}" if index is not None else str(record["job_id"])

    def recover(self, campaign, cells: list) -> dict:
        """Cells marked submitted whose job id was never recorded: adopt a job a killed sweep left (found by its
        name, no second job), or None when its sbatch never ran; absent while a live sweep may still submit it."""
        out = {}
        for cell in cells:
            status = campaign.status(cell.id)
            record = self.record(campaign, status.get("submission") or "")
            if record is not None and record.get("state") == "submitting":
                record = self.settle_submission(campaign, record)
            if record is None or record.get("state") in ("abandoned", "refused"):
                out[cell.id] = None  # its sweep died before sbatch: no job will ever come
            elif record.get("state") == "submitted":
                out[cell.id] = self.job_id(campaign, status)
        return out

    def settle_submission(self, campaign, record: dict, stream=None) -> dict:
        """A record left `submitting`: adopt its job if it reached Slurm (found by name), else abandon it.

        Left alone while the process that writes it may still be at work (alive on this host, or less
        than 10 min old elsewhere).
        """
        from submitit.core import utils as submitit_utils

        if record.get("pid") != os.getpid() and _maybe_alive(record):
            return record
        path = campaign.root / SLURM_DIR / "submissions" / f"{record['token']}.json"
        job_id = self._find_by_name(record["job_name"], since=record["created"] - 60)
        if not job_id:
            record["state"] = "abandoned"  # sbatch never ran: its cells are submitted afresh
            atomic_write_json(path, record)
            self._records[record["token"]] = record
            return record
        folder = campaign.root / SLURM_DIR / "jobs"
        array = len(record["cells"]) > 1
        for index in range(len(record["cells"])):
            pickle = folder / (f"{job_id}_{index}_submitted.pkl" if array else f"{job_id}_submitted.pkl")
            if not pickle.exists():  # killed between sbatch and submitit's renames: same content, rebuild
                delayed = submitit_utils.DelayedSubmission(_task_function(), str(path))
                delayed.set_timeout(60, 0)
                delayed.dump(pickle)
        record["state"], record["job_id"], record["adopted_at"] = "submitted", job_id, now_iso()
        atomic_write_json(path, record)
        self._records[record["token"]] = record
        (stream or sys.stderr).write(f"adopted Slurm job {job_id} ({len(record['cells'])} cell(s)), submitted by "
                                     "an interrupted sweep\n")
        return record

    def _find_by_name(self, job_name: str, since: float) -> str | None:
        out = run_command(["squeue", "-h", "--name", job_name, "-o", "%F"], timeout=30)
        ids = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if ids:
            return base_job_id(ids[0])
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
        out = run_command(["sacct", "-n", "-X", "-P", "--name", job_name, "-S", start, "-o", "JobID"], timeout=30)
        ids = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        return base_job_id(ids[0]) if ids else None

    # --- query -----------------------------------------------------------------------

    def query(self, campaign, job_ids: list) -> dict:
        """One squeue for all; sacct (else scontrol) only for the jobs squeue no longer knows."""
        alive = self._squeue(set(job_ids))
        out = {j: JobState(alive=True) for j in job_ids if j in alive}
        gone = set(job_ids) - alive
        if not gone:
            return out
        for job_id, info in self._final_states(gone).items():
            slurm_state = info["state"].split()[0].rstrip("+")
            if slurm_state in SQUEUE_ALIVE:
                out[job_id] = JobState(alive=True)  # squeue missed it by a hair; next time
                continue
            reason, retryable = FINAL_REASONS.get(slurm_state, (f"Slurm state {slurm_state}", True))
            detail = self._job_log_hint(campaign, job_id)
            if detail:
                reason, retryable = detail, False
            elif info.get("exit_code") and slurm_state in ("FAILED", "COMPLETED"):
                reason += f" (exit code {info['exit_code']})"
            if slurm_state == "NODE_FAIL" and info.get("nodes"):
                reason += f" (node {info['nodes']})"
            fields = {"slurm_state": slurm_state}
            if slurm_state == "TIMEOUT":
                fields["timed_out"] = True
            if slurm_state == "CANCELLED":
                fields["cancelled"] = True
            out[job_id] = JobState(alive=False, reason=reason, retryable=retryable, fields=fields,
                                   ended_at=_epoch(info.get("end")))
        return out  # a job neither knows is absent: the core's grace rule decides

    def _squeue(self, job_ids: set) -> set:
        """Those of these jobs Slurm still has queued or running (array tasks one by one); QueryFailed if it cannot say.

        One call, by array (base) job id: a campaign has few arrays, and the cluster's other jobs stay out.
        """
        bases = sorted({base_job_id(j) for j in job_ids})
        out = run_command(["squeue", "-h", "-r", "-o", "%i|%T", "--states=all", "-j", ",".join(bases)], timeout=60)
        if out.returncode != 0 and "invalid job id" in out.stderr.lower():
            out = subprocess.CompletedProcess(out.args, 0, "", "")  # none of them is known any more
        if out.returncode != 0:
            raise QueryFailed(f"squeue failed ({out.stderr.strip()})")
        alive = set()
        for line in out.stdout.splitlines():
            job, _, state = line.partition("|")
            if state.strip() in SQUEUE_ALIVE:
                alive.add(job.strip())
        return alive

    def _final_states(self, job_ids: set) -> dict:
        """{job id: {state, exit_code, nodes, end}} for ended jobs: sacct, else scontrol (jobs within MinJobAge)."""
        bases = sorted({base_job_id(j) for j in job_ids})
        result = {}
        out = run_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode,NodeList,End",
                           "-j", ",".join(bases)], timeout=120)
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                parts = line.split("|")
                if len(parts) >= 4 and parts[0] in job_ids:
                    result[parts[0]] = {"state": parts[1], "exit_code": parts[2] if parts[2] != "0:0" else None,
                                        "nodes": parts[3], "end": parts[4] if len(parts) > 4 else None}
            return result
        for job_id in sorted(job_ids):  # no accounting: slurmctld still knows jobs that ended recently
            show = run_command(["scontrol", "show", "job", "-o", job_id], timeout=30)
            fields = dict(f.split("=", 1) for f in show.stdout.split() if "=" in f)
            if fields.get("JobState"):
                result[job_id] = {"state": fields["JobState"], "exit_code": fields.get("ExitCode"),
                                  "nodes": fields.get("NodeList"), "end": fields.get("EndTime")}
        return result

    def _job_log_hint(self, campaign, job_id: str) -> str | None:
        """The job script's own message (missing interpreter) from submitit's log for that task."""
        path = campaign.root / SLURM_DIR / "jobs" / f"{job_id}_0_log.out"
        try:
            text = path.read_text(errors="replace")[-8192:]
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("benchmark-tracker: the interpreter"):
                return line.removeprefix("benchmark-tracker: ")
        return None

    # --- cancel ---------------------------------------------------------------------

    def cancel(self, campaign, job_ids: list) -> None:
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            done = run_command(["scancel", *ids[start:start + 500]], timeout=120)
            if done.returncode != 0 and done.stderr.strip():
                print(f"warning: scancel: {done.stderr.strip()}", file=sys.stderr)


class SbatchHung(Exception):
    """sbatch gave no answer in time."""


def _bounded_sbatch(executor, record_path: str, array_size: int | None) -> str:
    """submitit's submission (sbatch without a time limit of its own), bounded: a hung sbatch is stopped and
    reported. The first job's id; an array of `array_size` tasks when given."""
    import threading

    answer = {}

    def submit():
        try:
            if array_size:
                with executor.batch():
                    jobs = [executor.submit(_task_function(), record_path) for _ in range(array_size)]
            else:
                jobs = [executor.submit(_task_function(), record_path)]
            answer["job_id"] = jobs[0].job_id
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            answer["error"] = exc

    timeout = command_timeout_s(120)
    worker = threading.Thread(target=submit, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for pid in _children_named("sbatch"):  # stop it: no job can appear from it later
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        raise SbatchHung(f"sbatch gave no answer in {timeout:g} s")
    if "error" in answer:
        raise answer["error"]
    return answer["job_id"]


def _children_named(name: str) -> list:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, _, rest = text.partition("(")[2].rpartition(")")
        if comm == name and int(rest.split()[1]) == os.getpid():
            out.append(int(stat.parent.name))
    return out


def _maybe_alive(record: dict) -> bool:
    """Whether the process that wrote a submission record may still be submitting (one sbatch: never 10 min)."""
    if time.time() - record.get("created", 0) > 600:
        return False
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record.get("pid", 0)), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return int(record.get("pid", 0)) > 0
    return True


def _epoch(text: str | None) -> float | None:
    """Slurm's local-time stamps (2026-12-02T01:02:03); None when unknown (Unknown, None, empty)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def _task_function():
    from orchestrator.launchers import slurm_job

    return slurm_job.run_task


