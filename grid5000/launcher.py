"""`launcher: oar`: each cell as one OAR job on a whole node, submitted through execo_g5k.

    oarsub -l "host=N,walltime=H:M:S" -p "cluster='grele'" -q abaca [-t exotic] [-t monitor=...]
           -d <cell folder> -n bt-<cell id> <cell folder>/oar_job.sh

- Cells are submitted grouped per cluster, a few oarsub at a time; `sweep` submits and exits.
- The job script runs the guard (`python -m jobs.guard <cell folder>`, which runs the cell), then, on node
  types with Kwollect power metrics, `python -m grid5000.kwollect annotate` (the guard's post-step) to add
  each node's wall/BMC energy to result.json. A scaled cell (`nodes: N`, #15) asks for N whole hosts and
  runs `python -m jobs.workers oar`: rank 0 under the guard here, one task per other host through oarsh.
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
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from jobs.records import LOG_FILE
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import (GUARD_MARGIN_S, JobState, Launcher, QueryFailed, Refused, SchedulerUnreachable,
                                    command_timeout_s, refuse_control_characters)
from orchestrator.nodes import ROOT, node_types
from orchestrator.store import snapshot_code

OAR_DIR = ".oar"  # in the campaign: code snapshots
CODE_PACKAGES = ("jobs", "orchestrator", "grid5000")
TMP_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm")  # node-local, and purged by OAR's epilogue
JOB_SCRIPT = "oar_job.sh"
PENDING_STATES = {"Waiting", "Hold", "toLaunch", "toAckReservation", "Launching"}
ALIVE_STATES = PENDING_STATES | {"Running", "Finishing", "Suspended", "Resuming"}
ENDED_STATES = {"Terminated", "Error", "toError"}
SUBMIT_CONCURRENCY = 4
COMMAND_TIMEOUT_S = command_timeout_s(60.0)
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


def hosts_of(cell) -> int:
    """Whole hosts a cell asks OAR for: one per worker of a `nodes: N` cell (#15), else one."""
    return int(cell.params.get("nodes") or 1)


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


def oarstat_user() -> dict:
    """{job id (str): record} of this user's current jobs (one `oarstat -u -f -J` call); OarError when OAR did not
    answer: a failed listing is not an empty one (taken as "no job", it would make a rerun submit a second job)."""
    process = _run(["oarstat", "-u", "-f", "-J"])
    _finish([process])
    _check_ran(process, "oarstat")
    if process.exit_code != 0:
        raise OarError(f"oarstat -u exited with code {process.exit_code}: {_tail(process.stderr or process.stdout)}")
    text = (process.stdout or "").strip()
    if not text:  # what OAR 2.5.9 prints when the user has no current job (rc 0)
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OarError(f"oarstat -u printed no JSON ({exc}): {_tail(text)}") from None
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
        self._unanswered = None

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
        # A margin over timeout_s: the guard on the node, not OAR, stops an overlong cell and says so.
        return int(math.ceil(self.spec.sweep.timeout_s)) + extra + GUARD_MARGIN_S

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
        # OAR SIGKILLs a job at its walltime; ask for a SIGTERM first (half the margin past timeout_s, after the
        # guard's own timeout), so that the guard records why it stopped.
        spare = walltime - int(math.ceil(self.spec.sweep.timeout_s)) - GUARD_MARGIN_S // 2
        warning_s = min(max(15, spare), max(1, walltime // 4))
        refuse_control_characters({"oar types": types, "oar properties": filters, "oar queue": queue,
                                   "oar project": self.options.project, "cell folder": folder}, "an oarsub command")
        return execo_g5k.OarSubmission(
            resources=f"host={hosts_of(cell)}", walltime=walltime, job_type=types,
            additional_options=f"--checkpoint={warning_s} --signal=15",
            sql_properties=" AND ".join(filters), queue=None if queue == "default" else queue,
            directory=str(folder), project=self.options.project, name=f"bt-{cell.id}",
            command=str(folder / JOB_SCRIPT))

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
            # The guard records the job that ran the cell in its final status, as it does under Slurm.
            "BENCHMARK_TRACKER_JOB_ID=\"$OAR_JOB_ID\"; export BENCHMARK_TRACKER_JOB_ID",
            # The guard (the same as every launcher's) owns the cell: timeout, signals, the Kwollect post-step,
            # the final status last. In the background so that a SIGTERM from OAR (oardel, checkpoint) reaches it.
            f"{self.task_line(cell, folder)} >> {LOG_FILE} 2>&1 &",
            "pid=$!",
            "trap 'kill -TERM $pid 2>/dev/null' TERM INT",
            "wait $pid; rc=$?",
            "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done",
        ]
        lines.append("exit $rc")
        return "\n".join(lines) + "\n"

    def task_line(self, cell, folder: Path) -> str:
        """The job script's command: the guard; for a scaled cell (#15), jobs.workers' OAR task, which runs the guard
        here as rank 0 and one task per other host of $OAR_NODEFILE through oarsh (OAR's own remote shell)."""
        q = shlex.quote
        guard = self.guard_command(cell, folder)
        if "nodes" not in cell.params:
            return " ".join(q(a) for a in guard)
        # guard = [python, -m, jobs.guard, folder, --explain, ..., --post, ...]: the same options for rank 0
        return " ".join([q(self.python), "-m", "jobs.workers", "oar", q(str(folder)), '"$OAR_NODEFILE"',
                         *(q(a) for a in guard[4:])])

    def guard_command(self, cell, folder: Path) -> list:
        """`python -m jobs.guard <cell>`, with OAR's explainer and, where the node type has it, the Kwollect step."""
        node = node_types()[cell.node_type]
        command = [self.python, "-m", "jobs.guard", str(folder), "--explain", "grid5000.oar_job"]
        metrics = power_metrics(node) if self.options.kwollect else []
        if metrics:
            args = ["grid5000.kwollect", "annotate", str(folder), "--site", str(node.extra.get("site") or ""),
                    "--metrics", ",".join(m for m, _, _ in metrics), "--wait", str(KWOLLECT_WAIT_S - 10)]
            if self.options.kwollect_url:
                args += ["--url", self.options.kwollect_url]
            command += ["--post", shlex.join(args)]
        return command

    def submit(self, campaign, cells: list, progress) -> dict:
        """Per cluster, a few oarsub at a time: {cell id: OAR job id or Refused}; the first unanswered batch stops."""
        if not SAFE_PATH.match(str(campaign.root.resolve())):
            raise UserError(f"campaign folder {campaign.root.resolve()} has characters that cannot go into an OAR "
                            "command line", ["use an output folder made of letters, digits and _./+@:,=%~- only"])
        for what, path in (("campaign folder", campaign.root.resolve()), ("interpreter", Path(self.python))):
            if str(path).startswith(TMP_PREFIXES):
                progress.stream.write(f"warning: the {what} {path} is under a node-local temporary directory; nodes "
                                      "must see it at the same path, and OAR's epilogue purges those folders\n")
        self._code = code_snapshot(campaign.root)
        by_cluster = {}
        for cell in cells:
            by_cluster.setdefault(node_types()[cell.node_type].extra["cluster"], []).append(cell)
        answers = {}
        for cluster, group in sorted(by_cluster.items()):
            progress.stream.write(f"oar: submitting {len(group)} cell(s) to cluster {cluster}\n")
            for start in range(0, len(group), SUBMIT_CONCURRENCY):
                batch = group[start:start + SUBMIT_CONCURRENCY]
                got = self._submit_batch(campaign, batch, progress)
                if got is None:  # not one answer: OAR is unreachable
                    submitted = sum(1 for a in answers.values() if not isinstance(a, Refused))
                    raise SchedulerUnreachable(
                        f"OAR is unreachable: {self._unanswered}",
                        [f"{submitted} of {len(cells)} cell(s) were submitted before; none after. Rerun the same "
                         "command when OAR answers again"], submitted=answers,
                        refused={c.id: Refused(f"not submitted: {self._unanswered}", {"interrupted": True})
                                 for c in batch})
                answers.update(got)
        return answers

    def _submit_batch(self, campaign, cells: list, progress) -> dict | None:
        _, execo_g5k = _execo()
        from execo_g5k.oar import get_oarsub_commandline

        processes = []
        for cell in cells:
            folder = campaign.cell_dir(cell.id)
            script = folder / JOB_SCRIPT
            script.write_text(self.job_script(cell, folder, self._code))
            script.chmod(0o755)
            command = get_oarsub_commandline(self.submission(cell, folder))
            # Before oarsub, so that the job's own `running` always comes after.
            lifecycle.mark_submitted(folder, attempts=campaign.status(cell.id).get("attempts", 0) + 1,
                                     launcher=self.name, host=socket.gethostname(), oarsub=command)
            processes.append((cell, folder, command, _run(command)))
        _finish([p for *_, p in processes])
        if all(p.error or p.timeouted for *_, p in processes):
            self._unanswered = _no_answer(processes[0][3])
            return None
        answers = {}
        for cell, folder, command, process in processes:
            if process.error or process.timeouted:
                job_id, reason = None, f"oarsub could not run: {process.error_reason or 'timed out'}"
            else:
                job_id, reason = parse_oarsub(process.exit_code, process.stdout, process.stderr)
            if job_id is None:
                if reason.startswith("no OAR resource matches"):
                    reason = (f"{reason} (-p \"{_props(command)}\"{_queue_text(command)}); check the node type's "
                              "cluster and the oar.properties values (`oarnodes` lists what exists)")
                answers[cell.id] = Refused(reason, {"submit_output": _tail(f"{process.stdout}\n{process.stderr}", 10)})
                progress.stream.write(f"FAILED {cell.label}: {reason}\n")
                continue
            answers[cell.id] = str(job_id)
            progress.stream.write(f"SUBMIT {cell.label}: OAR job {job_id}\n")
        progress.stream.flush()
        return answers

    # --- after submission ------------------------------------------------------------------
    def query(self, campaign, job_ids: list) -> dict:
        """One `oarstat -f -J` for all; an ended job gets OAR's account of how (deleted, walltime, ...)."""
        try:
            info = oarstat([int(j) for j in job_ids])
        except OarError as exc:
            raise QueryFailed(f"cannot ask OAR about the jobs ({exc})") from None
        out = {}
        for job_id in job_ids:
            record = info.get(str(job_id))
            if record is None:
                continue  # unknown to OAR: the core says so, after its grace period
            if record.get("state") in ALIVE_STATES:
                out[job_id] = JobState(alive=True)
                continue
            out[job_id] = JobState(alive=False, reason=describe_end(job_id, record), ended_at=record.get("stopTime"),
                                   fields={"exit_code": record.get("exit_code"), "oar_state": record.get("state")})
        return out

    def cancel(self, campaign, job_ids: list) -> None:
        try:
            oardel([int(j) for j in job_ids])
        except OarError as exc:
            print(f"warning: {exc}", file=sys.stderr)

    def recover(self, campaign, cells: list) -> dict:
        """A cell marked submitted without a job id (the sweep died around oarsub): its job, found by its name
        (`bt-<cell id>`) among this user's jobs, or None once nothing of that name exists."""
        try:
            mine = oarstat_user()
        except OarError:
            return {}
        out = {}
        for cell in cells:
            since = lifecycle.iso_epoch(campaign.status(cell.id).get("submitted_at")) - 60  # this attempt's, not older
            found = [j for j, r in mine.items() if r.get("name") == f"bt-{cell.id}"
                     and (r.get("submissionTime") or 0) >= since]
            out[cell.id] = max(found, key=int) if found else None
        return out


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
