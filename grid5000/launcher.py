"""`launcher: oar`: each cell as one OAR job on a whole node, submitted through execo_g5k.

    oarsub -l "host=1,walltime=H:M:S" -p "cluster='grele'" -q abaca [-t exotic] [-t monitor=...]
           -d <cell folder> -n bt-<cell id> <cell folder>/oar_job.sh

- Cells are submitted grouped per cluster, a few oarsub at a time; `sweep` submits and exits.
- The job script runs `python -m jobs.run <cell folder>` (which writes running/done/failed itself), then,
  on node types with Kwollect power metrics, `python -m grid5000.kwollect annotate` to add the node's
  wall/BMC energy to result.json.
- State: the cell's status.json is the truth; OAR (`oarstat -f -J`, one call for all jobs) only decides what
  happened to a cell whose job is gone without a final status: deleted, killed, or ended without a word.
- Commands run on this machine (execo's `no_ssh_for_local_frontend`): the orchestrator runs on the site's
  frontend (homes are per site) or next to a local OAR; it never ssh-es, never asks for a password.
- Nothing from a sweep reaches a shell or an OAR property unchecked: names and paths are validated
  against safe character sets, OAR property values are SQL-quoted, the job script quotes with shlex.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from jobs.records import FINAL_STATES, LOG_FILE, STATUS_FILE, atomic_write_json, log_tail, update_status
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import Launcher, SchedulerUnreachable, command_timeout_s, refuse_control_characters
from orchestrator.nodes import ROOT, node_types
from orchestrator.store import snapshot_code

OAR_DIR = ".oar"  # in the campaign: code snapshots
CODE_PACKAGES = ("jobs", "orchestrator", "grid5000")
TMP_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm")  # node-local, and purged by OAR's epilogue
JOB_SCRIPT = "oar_job.sh"
JOB_RECORD = "oar_job.json"  # written by the launcher only: the OAR job id of the current attempt
PENDING_STATES = {"Waiting", "Hold", "toLaunch", "toAckReservation", "Launching"}
ALIVE_STATES = PENDING_STATES | {"Running", "Finishing", "Suspended", "Resuming"}
ENDED_STATES = {"Terminated", "Error", "toError"}
SUBMIT_CONCURRENCY = 4
COMMAND_TIMEOUT_S = command_timeout_s(60.0)
STATUS_GRACE_S = 5.0        # a job that just ended may still be writing its final status (NFS)
SUBMIT_GRACE_S = 300.0      # a `submitted` cell with no job id after this long lost its submission
MAX_QUERY_FAILURES = 5      # consecutive failed oarstat calls before `wait` gives up
KWOLLECT_WAIT_S = 60        # walltime added for the Kwollect step at the end of the job
# Kwollect node-level power metrics, most trusted first, with the label used in result.json.
POWER_METRICS = {"wattmetre_power_watt": "wattmeter", "pdu_outlet_power_watt": "pdu", "bmc_node_power_watt": "bmc"}

SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@:,=%~-]*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PROPERTY_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
JOB_TYPE = re.compile(r"^[A-Za-z0-9_.:,=*|+-]+$")  # night, monitor=wattmetre_power_watt, ...
UNSAFE_IN_VALUE = re.compile(r"[\"'`$\\\n\r\x00]")


def _walltime_s(value) -> int:
    """Seconds from an int or OAR's `hour:mn:sec | hour:mn | hour`."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", value.strip())
    if not match:
        raise ValueError(f"walltime {value!r}: use seconds, or OAR's hour:mn:sec, hour:mn or hour")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_walltime(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class OarOptions(BaseModel):
    """The sweep's `oar:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    walltime: StrictInt | StrictStr | None = None  # default: the sweep's timeout_s (+ the Kwollect step)
    queue: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_-]*$")] | None = None  # default: the cluster's
    job_types: list[Annotated[StrictStr, Field(pattern=JOB_TYPE.pattern)]] = []  # extra -t, e.g. night
    properties: dict[StrictStr, StrictStr | StrictInt | StrictFloat] = {}  # extra -p filters, ANDed
    project: Annotated[StrictStr, Field(pattern=SAFE_NAME.pattern)] | None = None
    python: StrictStr | None = None  # the interpreter on the nodes (default: this one)
    kwollect: bool = True             # fetch wall/BMC power after each cell where the node type has it
    kwollect_url: StrictStr | None = None  # API root (default https://api.grid5000.fr/stable/)

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value):
        if value is not None and _walltime_s(value) <= 0:
            raise ValueError("walltime must be positive")
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value):
        for name, item in value.items():
            if not PROPERTY_NAME.match(name):
                raise ValueError(f"property name {name!r}: lower-case letters, digits and _ only")
            if isinstance(item, str) and UNSAFE_IN_VALUE.search(item):
                raise ValueError(f"property {name}: value {item!r} contains a quote, $, ` or \\")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value):
        if value is not None and not SAFE_PATH.match(value):
            raise ValueError(f"python {value!r}: an absolute path of letters, digits and _./+@:,=%~- only")
        return value

    @field_validator("kwollect_url")
    @classmethod
    def _url(cls, value):
        if value is not None and not re.fullmatch(r"https?://[A-Za-z0-9_.:/%~+-]+", value):
            raise ValueError(f"kwollect_url {value!r}: an http(s) URL without query or quotes")
        return value


def sql_quote(value) -> str:
    """An OAR (SQL) literal: numbers as they are, strings single-quoted with '' doubled."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    text = str(value)
    if re.search(r"[\"`$\\\n\r\x00]", text):
        raise UserError(f"OAR property value {text!r} contains a character that cannot be passed safely")
    return "'" + text.replace("'", "''") + "'"


def power_metrics(node) -> list:
    """[(metric, label, on_demand)] of the node type's node-level Kwollect power metrics, best first."""
    known = node.extra.get("kwollect_metrics") or {m: {"period_ms": 1} for m in node.extra.get("power_metrics", [])}
    found = []
    for metric, label in POWER_METRICS.items():
        if metric in known:
            periods = known[metric] or {}
            on_demand = not periods.get("period_ms") and bool(periods.get("optional_period_ms"))
            found.append((metric, label, on_demand))
    return found


class OarError(Exception):
    """An OAR client command failed (not a job failure)."""


def _execo():
    """execo_g5k, configured to run every command here: no ssh to the frontend, no prompt, bounded."""
    from execo_g5k.config import g5k_configuration

    g5k_configuration["no_ssh_for_local_frontend"] = True
    g5k_configuration["default_timeout"] = COMMAND_TIMEOUT_S
    import execo
    import execo_g5k

    return execo, execo_g5k


def local_site() -> str | None:
    """The Grid'5000 site of this frontend (from its host name), None elsewhere (e.g. a test OAR)."""
    _, execo_g5k = _execo()
    from execo_g5k.utils import get_default_frontend

    site = get_default_frontend()
    if site is None:  # frontends often answer a short name (fnancy); their FQDN tells the site
        match = re.search(r"\.([a-z]+)\.grid5000\.fr$", socket.getfqdn())
        site = match.group(1) if match else None
    return site


def code_snapshot(campaign_root: Path) -> Path:
    return snapshot_code(campaign_root / OAR_DIR / "code", CODE_PACKAGES)


def _run(command, timeout: float = COMMAND_TIMEOUT_S):
    """Run an OAR client here through execo; return the finished process (never raises on exit codes)."""
    execo, _ = _execo()
    from execo_g5k.utils import get_frontend_host

    host = get_frontend_host(None)
    if host is not None:  # cannot happen with no_ssh_for_local_frontend, but never ssh silently
        raise OarError(f"execo would run {command!r} through ssh on {host}; run the orchestrator on the frontend")
    process = execo.Process(command, shell=False)
    process.timeout = timeout
    process.nolog_exit_code = process.nolog_error = process.nolog_timeout = True
    return process


def _finish(processes: list) -> None:
    for process in processes:
        process.start()
    for process in processes:
        process.wait()


def _check_ran(process, what: str):
    if process.error or process.timeouted:
        reason = "timed out" if process.timeouted else (process.error_reason or "could not start")
        raise OarError(f"{what} failed: {reason}")
    return process


def oarstat(job_ids: list) -> dict:
    """{job id (str): record} from one `oarstat -f -J` call; ids OAR does not know are absent."""
    if not job_ids:
        return {}
    command = ["oarstat", "-f", "-J"]
    for job_id in sorted(set(job_ids)):
        command += ["-j", str(int(job_id))]
    process = _run(command)
    _finish([process])
    _check_ran(process, "oarstat")
    if process.exit_code != 0:
        raise OarError(f"oarstat exited with code {process.exit_code}: {_tail(process.stderr or process.stdout)}")
    text = process.stdout.strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OarError(f"oarstat printed no JSON ({exc}): {_tail(text)}") from None
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def oardel(job_ids: list) -> None:
    if job_ids:
        process = _run(["oardel", *map(str, sorted(set(map(int, job_ids))))])
        _finish([process])


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in (text or "").strip().splitlines()[-lines:] if line.strip())


def parse_oarsub(exit_code: int | None, stdout: str, stderr: str) -> tuple:
    """(job id, None) or (None, reason). A refused reservation still prints an id: the exit code decides."""
    match = re.search(r"^OAR_JOB_ID=(-?\d+)\s*$", stdout or "", re.MULTILINE)
    job_id = int(match.group(1)) if match else None
    if exit_code == 0 and job_id is not None and job_id > 0:
        return job_id, None
    text = f"{stdout}\n{stderr}"
    if "not enough resources" in text or job_id == -5 or exit_code == 8:
        return None, "no OAR resource matches the request: there are not enough resources for your request"
    if "Reservation not valid" in text:
        return None, f"reservation refused: {_tail(text, 2)}"
    messages = [line for line in text.splitlines() if line.strip() and not line.startswith("OAR_JOB_ID=")]
    return None, f"oarsub exited with code {exit_code}: {_tail(chr(10).join(messages)) or 'no message'}"


def describe_end(job_id, record: dict) -> str:
    """Why an OAR job ended without its cell writing a final status."""
    state = record.get("state")
    exit_code = record.get("exit_code")
    events = record.get("events") or []
    kinds = {e.get("type") for e in events}
    if "FRAG_JOB_REQUEST" in kinds:
        who = next((e.get("description") for e in events if e.get("type") == "FRAG_JOB_REQUEST"), "")
        return f"OAR job {job_id} was deleted ({who or 'oardel'}) and ended in {state}"
    if kinds & {"WALLTIME", "FORCE_TERMINATE_FINISHED_JOB"} or any("walltime" in (e.get("description") or "").lower()
                                                                   for e in events):
        return f"OAR job {job_id} was killed at its walltime ({format_walltime(int(record.get('walltime') or 0))})"
    detail = "; ".join(e.get("description", "") for e in events[-2:] if e.get("description"))
    code = f", exit code {exit_code}" if exit_code is not None else ""
    return f"OAR job {job_id} ended in {state}{code} without a final status" + (f" ({detail})" if detail else "")


class OarLauncher(Launcher):
    name = "oar"
    blocking = False
    options_model = OarOptions

    def __init__(self, spec, options=None):
        super().__init__(spec, options or OarOptions())
        self.python = self.options.python or sys.executable
        self._query_failures = 0

    # --- before anything runs ------------------------------------------------------------
    def check_campaign(self, root) -> None:
        """OAR's command line takes plain paths only: refused before sweep.yaml, the manifest or cells/ exist."""
        refuse_control_characters({"campaign folder": root}, "an OAR job")
        if not SAFE_PATH.match(str(Path(root).resolve())):
            raise UserError(f"campaign folder {Path(root).resolve()} has characters that cannot go into an OAR "
                            "command line", ["use an output folder made of letters, digits and _./+@:,=%~- only"])

    def check(self, cells: list) -> None:
        if not shutil.which("oarsub"):
            raise UserError("launcher oar: `oarsub` is not on PATH",
                            ["run the sweep on an OAR frontend (a Grid'5000 site's frontend), "
                             "or `launcher: local` on this machine; nothing was written"])
        types = node_types()
        problems = []
        site = None
        for name in sorted({c.node_type for c in cells}):
            node = types[name]
            cluster = node.extra.get("cluster")
            if not cluster:
                known = sorted(n for n, t in types.items() if t.extra.get("cluster") and not t.extra.get("retired"))
                problems.append(f"node type {name!r} is not an OAR cluster; known clusters: {', '.join(known)}")
                continue
            if node.extra.get("retired"):
                problems.append(f"node type {name!r}: cluster {cluster} was retired on {node.extra['retired']}"
                                + (f"; closest current match: {node.extra['replacement']}"
                                   if node.extra.get("replacement") else ""))
                continue
            if not SAFE_NAME.match(str(cluster)):
                problems.append(f"node type {name!r}: cluster name {cluster!r} is not a plain name")
            walltime = self.walltime_s(node)
            limit = node.extra.get("max_walltime_s") or 0
            if limit and walltime > limit:
                problems.append(f"node type {name!r}: walltime {format_walltime(walltime)} exceeds the "
                                f"{format_walltime(limit)} allowed on {cluster} (lower timeout_s or oar.walltime)")
            if site is None:
                site = local_site()
            if site and node.extra.get("site") and node.extra["site"] != site:
                problems.append(f"node type {name!r} is at site {node.extra['site']}, but this is the {site} "
                                f"frontend: run this sweep from f{node.extra['site']} (homes are per site)")
        if not SAFE_PATH.match(self.python):
            problems.append(f"python {self.python!r} has characters that cannot go into a job command; "
                            "set oar.python to a plain path")
        if problems:
            raise UserError(f"{self.spec.path}: cannot submit these cells to OAR", problems)

    def walltime_s(self, node) -> int:
        if self.options.walltime is not None:
            return _walltime_s(self.options.walltime)
        extra = KWOLLECT_WAIT_S if self.options.kwollect and power_metrics(node) else 0
        return int(math.ceil(self.spec.sweep.timeout_s)) + extra

    # --- the submission -------------------------------------------------------------------------
    def submission(self, cell, folder: Path):
        """The execo OarSubmission of one cell (also used by the tests to pin the command line)."""
        _, execo_g5k = _execo()
        node = node_types()[cell.node_type]
        filters = [f"cluster={sql_quote(node.extra['cluster'])}"]
        filters += [f"{name}={sql_quote(value)}" for name, value in sorted(self.options.properties.items())]
        types = []
        if node.extra.get("exotic"):
            types.append("exotic")  # mandatory on exotic clusters (G5K); execo does not add it
        if self.options.kwollect:
            types += [f"monitor={m}" for m, _, on_demand in power_metrics(node)[:1] if on_demand]
        types += [t for t in self.options.job_types if t not in types]
        queue = self.options.queue or node.extra.get("queue") or "default"
        walltime = self.walltime_s(node)
        # OAR SIGKILLs a job at its walltime; ask for a SIGTERM first, so that the job records why it stopped.
        warning_s = min(max(15, walltime - int(math.ceil(self.spec.sweep.timeout_s))), max(1, walltime // 4))
        refuse_control_characters({"oar types": types, "oar properties": filters, "oar queue": queue,
                                   "oar project": self.options.project, "cell folder": folder}, "an oarsub command")
        return execo_g5k.OarSubmission(
            resources="host=1", walltime=walltime, job_type=types,
            additional_options=f"--checkpoint={warning_s} --signal=15",
            sql_properties=" AND ".join(filters), queue=None if queue == "default" else queue,
            directory=str(folder), project=self.options.project, name=f"bt-{cell.id}",
            command=str(folder / JOB_SCRIPT))

    @staticmethod
    def per_node_lines(folder: Path, python: str, code: Path, nodes: int) -> list:
        """scale (#15): job-script lines of a `nodes: N` cell: one `jobs.workers` task per host of $OAR_NODEFILE
        (rank 0 on the first, here), the others started through oarsh, OAR's own remote shell (the job's
        cgroups, no ssh keys). Quoted twice where a remote shell parses them again. Replaces the job's
        `python -m jobs.run` line when wired into job_script (not yet: see docs/scaling.md)."""
        q = shlex.quote
        hosts = str(folder / "hosts")
        remote = ["cd", q(str(folder)), "&&", "env", f"PYTHONPATH={q(str(code))}", q(python), "-m", "jobs.workers",
                  q(str(folder))]
        return [
            f"sort -u \"$OAR_NODEFILE\" > {q(hosts)}",
            f"if [ \"$(wc -l < {q(hosts)})\" -ne {int(nodes)} ]; then echo \"OAR gave $(wc -l < {q(hosts)}) host(s),"
            f" the cell needs {int(nodes)}\" >> {LOG_FILE}; exit 96; fi",
            "rank=1",
            f"for host in $(tail -n +2 {q(hosts)}); do",
            f"  oarsh \"$host\" {' '.join(q(t) for t in remote)} \"$rank\" {q(q(hosts))} >> {LOG_FILE} 2>&1 &",
            "  rank=$((rank + 1))",
            "done",
            f"{q(python)} -m jobs.workers {q(str(folder))} 0 {q(hosts)} >> {LOG_FILE} 2>&1 &",
        ]

    def job_script(self, cell, folder: Path, code: Path = ROOT) -> str:
        node = node_types()[cell.node_type]
        # Defense in depth (the sweep's values are checked at load): nothing may end a line of the script.
        refuse_control_characters({"cell folder": folder, "code folder": code, "oar.python": self.python,
                                   "oar.kwollect_url": self.options.kwollect_url, "site": node.extra.get("site"),
                                   "cell label": cell.label}, "an OAR job script")
        q = shlex.quote
        lines = [
            "#!/bin/sh",
            f"# OAR job of cell {cell.id} ({cell.label}), written by grid5000/launcher.py",
            f"cd {q(str(folder))} || exit 97",
            f"PYTHONPATH={q(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}; export PYTHONPATH",
            "PYTHONUNBUFFERED=1; export PYTHONUNBUFFERED",
            # In the background so that a SIGTERM from OAR (oardel, walltime) reaches the job, which records it.
            f"{q(self.python)} -m jobs.run {q(str(folder))} >> {LOG_FILE} 2>&1 &",
            "pid=$!",
            "trap 'kill -TERM $pid 2>/dev/null' TERM INT",
            "wait $pid; rc=$?",
            "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done",
        ]
        metrics = power_metrics(node) if self.options.kwollect else []
        if metrics:
            args = ["-m", "grid5000.kwollect", "annotate", str(folder), "--site", str(node.extra.get("site") or ""),
                    "--metrics", ",".join(m for m, _, _ in metrics), "--wait", str(KWOLLECT_WAIT_S - 10)]
            if self.options.kwollect_url:
                args += ["--url", self.options.kwollect_url]
            lines.append(f"[ $rc -eq 0 ] && {q(self.python)} {' '.join(q(a) for a in args)} >> {LOG_FILE} 2>&1")
        lines.append("exit $rc")
        return "\n".join(lines) + "\n"

    def launch(self, campaign, cells: list, progress) -> None:
        if not SAFE_PATH.match(str(campaign.root.resolve())):
            raise UserError(f"campaign folder {campaign.root.resolve()} has characters that cannot go into an OAR "
                            "command line", ["use an output folder made of letters, digits and _./+@:,=%~- only"])
        for what, path in (("campaign folder", campaign.root.resolve()), ("interpreter", Path(self.python))):
            if str(path).startswith(TMP_PREFIXES):
                progress.stream.write(f"warning: the {what} {path} is under a node-local temporary directory; nodes "
                                      "must see it at the same path, and OAR's epilogue purges those folders\n")
        cells = self._skip_alive(campaign, cells, progress)
        if not cells:
            return
        self._code = code_snapshot(campaign.root)
        by_cluster = {}
        for cell in cells:
            by_cluster.setdefault(node_types()[cell.node_type].extra["cluster"], []).append(cell)
        submitted = 0
        for cluster, group in sorted(by_cluster.items()):
            progress.stream.write(f"oar: submitting {len(group)} cell(s) to cluster {cluster}\n")
            for start in range(0, len(group), SUBMIT_CONCURRENCY):
                try:
                    submitted += self._submit_batch(campaign, group[start:start + SUBMIT_CONCURRENCY], progress)
                except SchedulerUnreachable as exc:
                    raise SchedulerUnreachable(str(exc), [f"{submitted} of {len(cells)} cell(s) were submitted "
                                                          "before; none after. Rerun the same command when OAR "
                                                          "answers again"]) from None

    def _skip_alive(self, campaign, cells: list, progress) -> list:
        """Resume: a cell whose OAR job is still queued or running is not submitted again."""
        jobs = {c.id: self._job_id(campaign, c) for c in cells
                if campaign.status(c.id)["state"] in ("submitted", "running")}
        jobs = {k: v for k, v in jobs.items() if v is not None}
        try:
            info = oarstat(list(jobs.values()))
        except OarError as exc:
            raise UserError(f"cannot ask OAR about the jobs already submitted: {exc}") from None
        todo = []
        for cell in cells:
            record = info.get(str(jobs.get(cell.id)))
            if record and record.get("state") in ALIVE_STATES:
                progress.stream.write(f"QUEUED {cell.label}: already OAR job {jobs[cell.id]} ({record['state']})\n")
                progress.skipped += 1
                continue
            todo.append(cell)
        return todo

    def _submit_batch(self, campaign, cells: list, progress) -> None:
        _, execo_g5k = _execo()
        from execo_g5k.oar import get_oarsub_commandline

        processes = []
        for cell in cells:
            folder = campaign.cell_dir(cell.id)
            attempt = campaign.status(cell.id).get("attempts", 0) + 1
            campaign.set_aside_outputs(cell.id, attempt - 1)
            for stale in (JOB_RECORD,):
                (folder / stale).unlink(missing_ok=True)
            script = folder / JOB_SCRIPT
            script.write_text(self.job_script(cell, folder, self._code))
            script.chmod(0o755)
            spec = self.submission(cell, folder)
            command = get_oarsub_commandline(spec)
            # Before oarsub, so that the job's own `running` always comes after.
            lifecycle.mark_submitted(folder, attempts=attempt, launcher=self.name, host=socket.gethostname(),
                          oarsub=command)
            processes.append((cell, folder, command, _run(command)))
        _finish([p for *_, p in processes])
        if all(p.error or p.timeouted for *_, p in processes):  # not one answer: OAR is unreachable
            for cell, folder, command, process in processes:
                update_status(folder, "failed", interrupted=True, reason=f"not submitted: {_no_answer(process)}")
            raise SchedulerUnreachable(f"OAR is unreachable: {_no_answer(processes[0][3])}")
        submitted = 0
        for cell, folder, command, process in processes:
            if process.error or process.timeouted:
                job_id, reason = None, f"oarsub could not run: {process.error_reason or 'timed out'}"
            else:
                job_id, reason = parse_oarsub(process.exit_code, process.stdout, process.stderr)
            if job_id is None:
                if reason.startswith("no OAR resource matches"):
                    reason = (f"{reason} (-p \"{_props(command)}\"{_queue_text(command)}); check the node type's "
                              "cluster and the oar.properties values (`oarnodes` lists what exists)")
                status = update_status(folder, "failed", reason=reason, submit_output=_tail(
                    f"{process.stdout}\n{process.stderr}", 10))
                progress.finish(cell.label, "failed", status["reason"], timed=False)
                continue
            atomic_write_json(folder / JOB_RECORD, {"job_id": job_id, "submitted_at": time.time(), "command": command})
            lifecycle.record_job_id(folder, job_id)
            progress.stream.write(f"SUBMIT {cell.label}: OAR job {job_id}\n")
            submitted += 1
        progress.stream.flush()
        return submitted

    @staticmethod
    def _job_id(campaign, cell):
        status = campaign.status(cell.id)
        if status.get("launcher") not in (None, "oar"):
            return None
        if status.get("job_id") is not None:
            return status["job_id"]
        try:
            return json.loads((campaign.cell_dir(cell.id) / JOB_RECORD).read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            return None

    # --- after submission ------------------------------------------------------------------
    def refresh(self, campaign, cells: list) -> None:
        jobs = {c.id: self._job_id(campaign, c) for c in cells}
        try:
            info = oarstat([j for j in jobs.values() if j is not None])
            self._query_failures = 0
        except OarError as exc:
            self._query_failures += 1
            print(f"warning: cannot ask OAR about the jobs ({exc})", file=sys.stderr)
            if self._query_failures >= MAX_QUERY_FAILURES:
                raise UserError(f"OAR did not answer {self._query_failures} times in a row: {exc}") from None
            return
        # A job that ended moments ago may still be showing its final status (shared file systems): one wait.
        stops = [(info.get(str(j)) or {}).get("stopTime") or 0 for j in jobs.values() if j is not None]
        recent = [stop for stop in stops if stop and time.time() - stop < STATUS_GRACE_S]
        if recent:
            time.sleep(max(0.0, STATUS_GRACE_S - (time.time() - max(recent))))
        for cell in cells:
            folder = campaign.cell_dir(cell.id)
            status = campaign.status(cell.id)
            if status["state"] in FINAL_STATES or status["state"] == "pending":
                continue
            job_id = jobs[cell.id]
            if job_id is None:
                age = time.time() - os.path.getmtime(folder / STATUS_FILE)
                if age > SUBMIT_GRACE_S and not campaign.is_locked():
                    update_status(folder, "failed", reason="submitted, but no OAR job id was ever recorded "
                                                           "(the sweep stopped while submitting?)")
                continue
            record = info.get(str(job_id))
            if record is not None and record.get("state") in ALIVE_STATES:
                continue
            reason = (describe_end(job_id, record) if record is not None else
                      f"OAR job {job_id} is unknown to OAR (purged, or submitted to another OAR server)")
            update_status(folder, "failed", reason=reason, job_id=job_id, exit_code=(record or {}).get("exit_code"),
                          log_tail=log_tail(folder / LOG_FILE), oar_state=(record or {}).get("state"))

    def settle(self, campaign, cells: list) -> None:
        """A done cell's job still runs its Kwollect step: wait (bounded) for those jobs to end."""
        ids = [self._job_id(campaign, c) for c in cells if campaign.status(c.id)["state"] == "done"]
        ids = [j for j in ids if j is not None]
        deadline = time.monotonic() + KWOLLECT_WAIT_S + 30
        while ids and time.monotonic() < deadline:
            try:
                info = oarstat(ids)
            except OarError:
                return
            ids = [j for j in ids if (info.get(str(j)) or {}).get("state") in ALIVE_STATES]
            if ids:
                time.sleep(2)

    def cancel(self, campaign, cells: list) -> None:
        jobs = {c.id: self._job_id(campaign, c) for c in cells}
        ids = [j for j in jobs.values() if j is not None]
        try:
            oardel(ids)
            deadline = time.monotonic() + 30
            while ids and time.monotonic() < deadline:  # let the jobs go, so their last words come first
                info = oarstat(ids)
                ids = [j for j in ids if (info.get(str(j)) or {}).get("state") in ALIVE_STATES]
                if ids:
                    time.sleep(1)
        except OarError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        for cell in cells:
            status = campaign.status(cell.id)
            if status["state"] == "done":
                continue
            job = f" (OAR job {jobs[cell.id]} deleted)" if jobs[cell.id] is not None else ""
            update_status(campaign.cell_dir(cell.id), "failed", reason=f"cancelled by the user{job}",
                          cancelled=True, job_id=jobs[cell.id])


def _no_answer(process) -> str:
    if process.timeouted:
        return f"oarsub gave no answer in {COMMAND_TIMEOUT_S:g} s"
    return f"oarsub could not run: {process.error_reason or 'no reason given'}"


def _props(command: str) -> str:
    match = re.search(r' -p "([^"]*)"', command)
    return match.group(1) if match else ""


def _queue_text(command: str) -> str:
    match = re.search(r' -q "([^"]*)"', command)
    return f", queue {match.group(1)}" if match else ""
