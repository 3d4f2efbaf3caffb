"""Fake Slurm and OAR client commands for the contract suite (test-only; never shipped).

`bin/sbatch`, `bin/squeue`, ... `bin/oarsub` are one-line shims into this file. A job "runs" as a local
background process (its own session) on this machine, so the launchers can be exercised without root and
without the services. Every answer imitates, line for line, what the real one-node Slurm 22.05 and OAR 2.5.9
printed: see tests/data/slurm/live-2026-12-02 and tests/data/oar/live-2026-12-02 (recorded from the live
servers, commands in their README.md). What the fakes do NOT reproduce: accounting lag, node failure,
`--hold`/`scontrol release`, resource limits beyond the time limit, and anything about other users' jobs.

State lives in $FAKE_SCHEDULER_DIR (one JSON file per job or array task, an id counter). Switches there:
- `down`: the scheduler is unreachable. Slurm clients answer as recorded with a controller that does not
  answer (rc 1, `Unable to contact slurm controller (connect failure)`); sacct still answers (slurmdbd).
  OAR clients hang (what a client of an unreachable server does; there is no output to imitate).
- `pause-after-submit` (a number of seconds): the next submission reaches the scheduler, then the client
  writes `paused` (with the job id) and sleeps that long before answering: a submitter killed in between
  leaves a job it never recorded. Used once (the file is removed).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
SLURM_REC = DATA / "slurm" / "live-2026-12-02"
OAR_REC = DATA / "oar" / "live-2026-12-02"
KILL_WAIT_S = 3.0          # slurm.conf KillWait of the live test cluster
MIN_JOB_AGE_S = 300.0      # slurm.conf MinJobAge: ended jobs leave squeue after this
OAR_KILL_DELAY_S = 2.0     # oardel: SIGTERM, then SIGKILL (OAR's oarexec does the same)
HOST = "vm"                # the live Slurm node's name, as in the recordings


def state_dir() -> Path:
    path = Path(os.environ["FAKE_SCHEDULER_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def recorded(name: str, base: Path = SLURM_REC) -> tuple:
    rc = int((base / f"{name}.rc").read_text().strip().removeprefix("rc="))
    return (base / f"{name}.stdout").read_text(), (base / f"{name}.stderr").read_text(), rc


def answer(stdout: str = "", stderr: str = "", rc: int = 0):
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(rc)


def down() -> bool:
    return (state_dir() / "down").exists()


def new_id() -> int:
    path = state_dir() / "next_id"
    with open(state_dir() / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        value = int(path.read_text()) if path.exists() else 1
        path.write_text(str(value + 1))
    return value


def job_path(key: str) -> Path:
    return state_dir() / "jobs" / f"{key}.json"


def load(key: str) -> dict | None:
    try:
        return json.loads(job_path(key).read_text())
    except (OSError, ValueError):
        return None


def save(job: dict) -> None:
    path = job_path(job["key"])
    tmp = path.with_suffix(".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


def update(key: str, **fields) -> dict:
    with open(state_dir() / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = load(key)
        job.update(fields)
        save(job)
    return job


def all_jobs(kind: str) -> list:
    jobs = [json.loads(p.read_text()) for p in sorted((state_dir() / "jobs").glob("*.json"))]
    return sorted((j for j in jobs if j["kind"] == kind), key=lambda j: (j["id"], j.get("task") or 0))


def maybe_pause(job_id) -> None:
    """Answer late (see the top): until `paused` is removed (the test, once it killed the submitter) or timeout."""
    pause = state_dir() / "pause-after-submit"
    if pause.exists():
        seconds = float(pause.read_text() or 30)
        pause.unlink()
        paused = state_dir() / "paused"
        paused.write_text(str(job_id))
        deadline = time.time() + seconds
        while paused.exists() and time.time() < deadline:
            time.sleep(0.1)


def start_runner(key: str) -> None:
    subprocess.Popen([sys.executable, str(Path(__file__)), "_run", key], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env=dict(os.environ))


# --- the runner: one per job or array task -----------------------------------------------------

def _may_start(job: dict) -> bool:
    if job["kind"] == "slurm":
        if job.get("array_limit") is None:
            return True
        running = [j for j in all_jobs("slurm") if j["id"] == job["id"] and j["state"] == "RUNNING"]
        earlier = [j for j in all_jobs("slurm") if j["id"] == job["id"] and j["state"] == "PENDING"
                   and j["task"] < job["task"]]
        return len(running) < job["array_limit"] and not earlier
    # OAR host=1 on the one test host: one job at a time, in submission order.
    others = [j for j in all_jobs("oar") if j["key"] != job["key"]]
    return not any(j["state"] == "Running" or (j["state"] == "Waiting" and j["id"] < job["id"]) for j in others)


def run(key: str) -> None:
    job = load(key)
    slurm = job["kind"] == "slurm"
    while True:
        job = load(key)
        if job.get("cancel"):
            update(key, state="CANCELLED" if slurm else "Error", end=time.time(), exit_code="0:0" if slurm else None,
                   events=job.get("events", []) + ([] if slurm else _oar_frag_events(job)))
            return
        if _may_start(job):
            break
        time.sleep(0.2)
    if slurm:  # --export=ALL: the submitter's environment
        env = dict(os.environ, **job["env"])
    else:  # OAR starts jobs with a fresh login environment, not the submitter's
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8",
               "USER": job["owner"], **job["env"]}
    out = open(job["output"], "ab") if job.get("output") else subprocess.DEVNULL
    err = open(job["error"], "ab") if job.get("error") else subprocess.STDOUT
    argv = ["/bin/bash", job["script"]] if slurm else ["/bin/bash", "-c", job["command"]]
    child = subprocess.Popen(argv, cwd=job["workdir"], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    started = time.time()
    update(key, state="RUNNING" if slurm else "Running", start=started, pgid=child.pid)
    limit = job["time_limit_s"]
    warned = killed_at = None
    early = None  # sbatch --signal=SIG@SECONDS: SIG to the job's steps (srun) that long before the limit
    if slurm and job.get("signal"):
        name, _, seconds = job["signal"].removeprefix("B:").partition("@")
        # Slurm sends due signals from a periodic pass, not at once: on the live cluster a USR2 due at the
        # start of a 1-minute job arrived 24 s into it (slurm-test-cluster.md). Never sooner than 20 s here.
        due = max(started + 20, started + limit - float(seconds or 60))
        early = (getattr(signal, "SIG" + name.removeprefix("SIG")), due)
    ending = None
    while child.poll() is None:
        time.sleep(0.1)
        job = load(key)
        now = time.time()
        if ending is None and job.get("cancel"):
            ending = "cancel"
            _signal_group(child.pid, signal.SIGTERM)
            killed_at = now + (KILL_WAIT_S if slurm else OAR_KILL_DELAY_S)
        elif ending is None and not slurm and job.get("checkpoint") and warned is None \
                and now >= started + limit - job["checkpoint"]:
            warned = now  # OAR --checkpoint=N --signal=S: the signal N s before the walltime
            _signal_group(child.pid, job.get("checkpoint_signal") or signal.SIGUSR2)
        elif early is not None and now >= early[1] and job.get("steps"):
            for step in job["steps"]:
                try:
                    os.kill(step, early[0])
                except ProcessLookupError:
                    pass
            early = None
        elif ending is None and now >= started + limit:
            ending = "timeout"
            _signal_group(child.pid, signal.SIGTERM if slurm else signal.SIGKILL)
            killed_at = now + KILL_WAIT_S
        if killed_at is not None and now >= killed_at:
            _signal_group(child.pid, signal.SIGKILL)
    rc = child.returncode
    _signal_group(child.pid, signal.SIGKILL)  # whatever the script left behind goes with the job, as in Slurm
    end = time.time()
    if slurm:
        code = f"{rc}:0" if rc >= 0 else f"0:{-rc}"
        state = {"cancel": f"CANCELLED by {os.getuid()}", "timeout": "TIMEOUT"}.get(ending) or (
            "COMPLETED" if rc == 0 else "FAILED")
        update(key, state=state, end=end, exit_code=code)
    else:
        status = rc << 8 if rc >= 0 else -rc  # OAR reports the raw wait status (recorded: exit 3 -> 768)
        events = load(key).get("events", [])
        if ending == "cancel":
            update(key, state="Error", end=end, exit_code=None, events=events + _oar_frag_events(job))
        else:
            if warned is not None:
                events = events + [{"type": "CHECKPOINT", "description": f"User oar (sarko) requested a checkpoint on "
                                                                       f"the job {job['id']} on localhost"},
                                   {"type": "CHECKPOINT_SUCCESSFULL", "description": f"[sarko] The job {job['id']} "
                                    "was notified to checkpoint itself on the node localhost"}]
            if ending == "timeout":
                events = events + [{"type": "WALLTIME", "description": f"[sarko] Job [{job['id']}] from "
                                    f"{int(started)} with {limit}; current time={int(end)} (Elapsed)"}]
            events = events + [{"type": "SWITCH_INTO_TERMINATE_STATE",
                                "description": f"[bipbip {job['id']}] Ask to change the job state"}]
            update(key, state="Error" if ending == "timeout" else "Terminated", end=end, exit_code=status,
                   events=events)


def _oar_frag_events(job: dict) -> list:
    return [{"type": "FRAG_JOB_REQUEST", "description": f"User {job['owner']} requested to frag the job {job['id']}"},
            {"type": "SEND_KILL_JOB", "description": f"[Leon] Send the kill signal to oarexec on localhost for job "
                                                     f"{job['id']}"},
            {"type": "SWITCH_INTO_ERROR_STATE", "description": f"[bipbip {job['id']}] Ask to change the job state"}]


def _signal_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- Slurm -----------------------------------------------------------------------------------------

def _slurm_minutes(value: str) -> float:
    """--time: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
    parts = [int(p) for p in value.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    elif len(parts) == 2:
        minutes = parts[0] + parts[1] / 60
    else:
        minutes = parts[0] * 60 + parts[1] + parts[2] / 60
    return days * 1440 + minutes


def _sbatch_options(args: list) -> tuple:
    options, rest = {}, list(args)
    while rest and rest[0].startswith("-"):
        arg = rest.pop(0)
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            if not sep:
                if key in ("test-only", "hold", "no-requeue", "exclusive", "parsable", "wait", "unbuffered"):
                    value = True
                else:
                    value = rest.pop(0)
        else:  # -J name, -t time, -o out, -p part, -a array, -D dir
            short = {"-J": "job-name", "-t": "time", "-o": "output", "-e": "error", "-p": "partition",
                     "-a": "array", "-D": "chdir", "-N": "nodes", "-c": "cpus-per-task", "-C": "constraint"}
            key, value = short.get(arg[:2], arg[1:]), arg[2:] or rest.pop(0)
        options[key] = value
    return options, rest


def sbatch(args: list) -> None:
    if down():
        answer(*recorded("sbatch-unreachable" if "--test-only" in args else "sbatch-submit-unreachable"))
    options, rest = _sbatch_options(args)
    script_text = None
    if rest:
        script_text = Path(rest[0]).read_text()
        for line in script_text.splitlines():  # #SBATCH lines, before the first command, as sbatch reads them
            if line.startswith("#SBATCH"):
                more, _ = _sbatch_options(shlex.split(line[len("#SBATCH"):]))
                for key, value in more.items():
                    options.setdefault(key, value)
            elif line.strip() and not line.startswith("#"):
                break
    if options.get("partition", "debug") != "debug":
        answer("", "sbatch: error: Batch job submission failed: Invalid partition name specified\n", 1)
    if options.get("hold"):
        answer("", "fake sbatch: --hold is not imitated (no scontrol release); use the live cluster\n", 1)
    if options.get("test-only"):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        answer("", f"sbatch: Job {new_id()} to start at {stamp} using 1 processors on nodes {HOST} in "
                   "partition debug\n", 0)
    job_id = new_id()
    workdir = options.get("chdir") or os.getcwd()
    if script_text is None:
        script = state_dir() / f"wrap-{job_id}.sh"
        script.write_text(f"#!/bin/sh\n{options['wrap']}\n")
    else:
        script = state_dir() / f"script-{job_id}.sh"
        script.write_text(script_text)  # Slurm keeps its own copy of the script
    tasks, limit = [None], None
    if options.get("array"):
        match = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", options["array"])
        tasks = list(range(int(match.group(1)), int(match.group(2)) + 1))
        limit = int(match.group(3)) if match.group(3) else None
    minutes = _slurm_minutes(str(options.get("time", "525600")))
    for task in tasks:
        task_job_id = job_id if task in (None, tasks[0]) else new_id()
        key = f"{job_id}_{task}" if task is not None else str(job_id)
        env = {"SLURM_JOB_ID": str(task_job_id), "SLURM_JOB_NAME": options.get("job-name", script.name),
               "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": HOST, "SLURM_NODEID": "0",
               "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_SUBMIT_DIR": os.getcwd(),
               "SLURM_CLUSTER_NAME": "local", "SLURMD_NODENAME": HOST, "SLURM_JOB_PARTITION": "debug"}
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=str(task))

        def expand(pattern):
            return (pattern.replace("%A", str(job_id)).replace("%a", str(task if task is not None else 4294967294))
                    .replace("%j", str(task_job_id)).replace("%x", env["SLURM_JOB_NAME"]))

        output = expand(options.get("output", f"slurm-{'%A_%a' if task is not None else '%j'}.out"))
        error = expand(options["error"]) if options.get("error") else None
        save({"key": key, "kind": "slurm", "id": job_id, "task": task, "name": env["SLURM_JOB_NAME"],
              "state": "PENDING", "submit": time.time(), "time_limit_s": minutes * 60, "array_limit": limit,
              "script": str(script), "workdir": workdir, "env": dict(env, FAKE_SCHEDULER_JOB=key),
              "signal": options.get("signal"),
              "output": output if output != "/dev/null" else None, "error": error})
        start_runner(key)
    maybe_pause(job_id)
    answer(f"Submitted batch job {job_id}\n")


def _display_id(job: dict) -> str:
    return f"{job['id']}_{job['task']}" if job.get("task") is not None else str(job["id"])


def _selected(jobs: list, ids: list) -> list:
    bases = {i.split("_")[0] for i in ids}
    exact = set(ids)
    return [j for j in jobs if str(j["id"]) in bases and (str(j["id"]) in exact or _display_id(j) in exact)]


def _ids(values: list) -> list:
    return [i for v in values for i in v.split(",") if i]


def _parse(args: list, flags: set) -> tuple:
    """Options of squeue/sacct: {name: [values]} and the set of boolean flags seen."""
    seen, values, rest = set(), {}, list(args)
    while rest:
        arg = rest.pop(0)
        if arg in flags:
            seen.add(arg)
            continue
        key, sep, value = arg.partition("=")
        if not sep:
            value = rest.pop(0) if rest else ""
        values.setdefault(key, []).append(value)
    return values, seen


SQUEUE_ALIASES = {"-o": "--format", "-j": "--jobs", "-n": "--name", "-t": "--states"}


def squeue(args: list) -> None:
    if down():
        answer(*recorded("squeue-unreachable"))
    values, flags = _parse(args, {"-h", "--noheader", "-r", "--array"})
    values = {SQUEUE_ALIASES.get(k, k): v for k, v in values.items()}
    jobs = all_jobs("slurm")
    now = time.time()
    if values.get("--states", [""])[0].lower() == "all":
        jobs = [j for j in jobs if j["state"] in ("PENDING", "RUNNING") or now - j.get("end", now) < MIN_JOB_AGE_S]
    else:
        jobs = [j for j in jobs if j["state"] in ("PENDING", "RUNNING")]
    if "--jobs" in values:
        wanted = _ids(values["--jobs"])
        jobs = _selected(jobs, wanted)
        if not jobs:
            answer(*recorded("squeue-invalid"))
    if "--name" in values:
        jobs = [j for j in jobs if j["name"] in _ids(values["--name"])]
    fmt = values.get("--format", ["%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"])[0]

    def line(job):
        fields = {"i": _display_id(job), "T": job["state"], "j": job["name"], "F": str(job["id"]),
                  "A": str(job["env"]["SLURM_JOB_ID"]), "K": str(job.get("task") or "N/A"), "u": "root"}
        return re.sub(r"%\.?\d*([A-Za-z])", lambda m: fields.get(m.group(1), ""), fmt)

    answer("".join(line(j) + "\n" for j in reversed(jobs)))


SACCT_ALIASES = {"-o": "--format", "-j": "--jobs", "-S": "--starttime"}


def sacct(args: list) -> None:
    values, flags = _parse(args, {"-n", "--noheader", "-X", "--allocations", "-P", "--parsable2"})
    values = {SACCT_ALIASES.get(k, k): v for k, v in values.items()}
    fields = ",".join(values.get("--format", ["JobID,State,ExitCode,NodeList"])).split(",")
    jobs = all_jobs("slurm")
    if "--jobs" in values:
        jobs = _selected(jobs, _ids(values["--jobs"]))
    if "--name" in values:
        jobs = [j for j in jobs if j["name"] in _ids(values["--name"])]
    lines = [] if flags & {"-n", "--noheader"} else ["|".join(fields)]
    for job in jobs:
        started = job["state"] != "PENDING" and not (job["state"].startswith("CANCELLED") and "start" not in job)
        row = {"JobID": _display_id(job), "State": job["state"], "ExitCode": job.get("exit_code", "0:0"),
               "NodeList": HOST if started else "None assigned", "JobName": job["name"]}
        lines.append("|".join(row.get(f, "") for f in fields))
        if started and not flags & {"-X", "--allocations"}:  # the batch step, as recorded
            step = dict(row, JobID=row["JobID"] + ".batch", State=row["State"].split(" by ")[0])
            lines.append("|".join(step.get(f, "") for f in fields))
    answer("".join(line + "\n" for line in lines))


def scontrol(args: list) -> None:
    if down():
        answer(*recorded("scontrol-config-unreachable"))
    if args[:2] == ["show", "config"]:
        answer(*recorded("scontrol-show-config"))
    if args[:2] == ["show", "job"]:
        wanted = [a for a in args[2:] if a != "-o"]
        jobs = _selected(all_jobs("slurm"), wanted)
        if not jobs:
            answer("", "slurm_load_jobs error: Invalid job id specified\n", 1)
        job = jobs[0]
        reason = "None" if job["state"] != "TIMEOUT" else "TimeLimit"
        answer(f"JobId={job['env']['SLURM_JOB_ID']} JobName={job['name']} JobState={job['state'].split()[0]} "
               f"Reason={reason} ExitCode={job.get('exit_code', '0:0')} NodeList={HOST}\n")
    answer("", f"fake scontrol: {' '.join(args)} is not imitated\n", 1)


def scancel(args: list) -> None:
    if down():
        answer("", "scancel: error: Kill job error on job id: Unable to contact slurm controller (connect failure)\n", 1)
    values, _ = _parse([a for a in args if a.startswith("--")], set())
    ids = [a for a in args if not a.startswith("-")]
    jobs = all_jobs("slurm")
    chosen = _selected(jobs, ids) if ids else []
    if "--name" in values:
        chosen += [j for j in jobs if j["name"] in _ids(values["--name"])]
    errors = [f"scancel: error: Kill job error on job id {i}: Invalid job id specified\n" for i in ids
              if not _selected(jobs, [i])]
    for job in chosen:
        if job["state"] in ("PENDING", "RUNNING"):
            update(job["key"], cancel=True)
    answer("", "".join(errors), 1 if errors else 0)


def srun(args: list) -> None:
    """srun inside a batch job: one task, here, with --output/--error; job id patterns expanded."""
    options, rest = _sbatch_options(args)
    env = dict(os.environ, SLURM_STEP_ID="0", SLURM_STEPID="0")

    def expand(pattern):
        job, task = env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]), env.get("SLURM_ARRAY_TASK_ID", "0")
        return (pattern.replace("%A", job).replace("%a", task).replace("%j", env["SLURM_JOB_ID"])
                .replace("%t", "0"))

    out = open(expand(options["output"]), "ab") if options.get("output") else None
    err = open(expand(options["error"]), "ab") if options.get("error") else (subprocess.STDOUT if out else None)
    child = subprocess.Popen(rest, env=env, stdout=out, stderr=err)
    key = os.environ.get("FAKE_SCHEDULER_JOB")
    if key:  # so that the job's --signal reaches this step, as Slurm signals steps, not the batch shell
        update(key, steps=(load(key).get("steps") or []) + [os.getpid()])
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):  # srun forwards signals to its task
        signal.signal(sig, lambda s, f: child.send_signal(s))
    rc = child.wait()
    sys.exit(rc if rc >= 0 else 128 - rc)


# --- OAR -------------------------------------------------------------------------------------------

def _hang() -> None:
    time.sleep(3600)
    sys.exit(1)


def oarsub(args: list) -> None:
    if down():
        _hang()
    options, rest = {"-t": []}, list(args)
    while rest and rest[0].startswith("-"):
        arg = rest.pop(0)
        if arg.startswith("--"):
            key, sep, value = arg.partition("=")
            options[key] = value if sep else rest.pop(0)
        elif arg == "-t":
            options["-t"].append(rest.pop(0))
        else:
            options[arg] = rest.pop(0)
    command = rest[0] if rest else "sleep 31536000"
    resources = options.get("-l", "")
    match = re.search(r"walltime=(\d+)(?::(\d+))?(?::(\d+))?", resources)
    walltime = 3600 if not match else int(match.group(1)) * 3600 + int(match.group(2) or 0) * 60 + int(
        match.group(3) or 0)
    props = options.get("-p", "")
    if props and props != "cluster='chifflet'":  # the test server's one node: cluster chifflet, nothing more
        answer("[ADMISSION RULE] Modify resource description with type constraints\nOAR_JOB_ID=-5\n",
               "There are not enough resources for your request\n", 8)
    job_id = new_id()
    name = options.get("-n", "")
    workdir = options.get("-d") or os.getcwd()
    stdout = str(Path(workdir) / f"OAR.{name or 'oarsub'}.{job_id}.stdout")
    save({"key": f"oar-{job_id}", "kind": "oar", "id": job_id, "name": name, "state": "Waiting",
          "submit": time.time(), "time_limit_s": walltime, "command": command, "workdir": workdir,
          "owner": os.environ.get("USER") or "root", "types": options["-t"], "properties": props,
          "checkpoint": int(options["--checkpoint"]) if options.get("--checkpoint") else None,
          "checkpoint_signal": int(options["--signal"]) if options.get("--signal") else None,
          "env": {"OAR_JOB_ID": str(job_id), "OAR_JOBID": str(job_id), "OAR_JOB_NAME": name,
                  "OAR_WORKDIR": workdir, "OAR_NODEFILE": "/dev/null"},
          "output": stdout, "error": stdout.replace(".stdout", ".stderr"), "events": []})
    start_runner(f"oar-{job_id}")
    maybe_pause(job_id)
    answer(f"[ADMISSION RULE] Modify resource description with type constraints\nOAR_JOB_ID={job_id}\n")


def _oar_record(job: dict) -> dict:
    template = json.loads((OAR_REC / "oarstat-fJ-ended.stdout").read_text())["2"]
    record = dict(template)
    wall = job["time_limit_s"]
    record.update({
        "Job_Id": job["id"], "array_id": job["id"], "name": job["name"] or None, "state": job["state"],
        "command": job["command"], "launchingDirectory": job["workdir"], "owner": job["owner"],
        "job_user": job["owner"], "types": job["types"], "walltime": wall,
        "submissionTime": int(job["submit"]), "startTime": int(job.get("start", 0)), "stopTime": int(job.get("end", 0)),
        "exit_code": job.get("exit_code"), "events": [dict(e, job_id=job["id"], to_check="NO", event_id=n,
                                                            date=int(job.get("end", time.time())))
                                                       for n, e in enumerate(job.get("events", []), 1)],
        "stdout_file": Path(job["output"]).name, "stderr_file": Path(job["error"]).name,
        "assigned_network_address": ["localhost"] if job.get("start") else [],
        "assigned_resources": [1, 2] if job.get("start") else [],
        "scheduledStart": None,
        "wanted_resources": f"-l \"{{type = 'default'}}/host=1,walltime={wall // 3600}:{wall % 3600 // 60}:"
                            f"{wall % 60}\" ",
    })
    return record


def oarstat(args: list) -> None:
    if down():
        _hang()
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j" and i + 1 < len(args)]
    ids += [a[2:] for a in args if a.startswith("-j") and len(a) > 2]
    jobs = {str(j["id"]): j for j in all_jobs("oar")}
    if "-u" in args and not ids:  # the user's current jobs, ended ones left out; none: empty output, rc 0 (recorded)
        ids = [i for i, j in jobs.items() if j["state"] in ("Waiting", "Running")]
    records = {i: _oar_record(jobs[i]) for i in ids if i in jobs}
    if "-J" not in args:
        answer("", "fake oarstat: only -f -J is imitated\n", 1)
    answer(json.dumps(records, indent=3) + "\n" if records else "")


def oardel(args: list) -> None:
    if down():
        _hang()
    jobs = {str(j["id"]): j for j in all_jobs("oar")}
    out, rc = "", 0
    for job_id in args:
        job = jobs.get(job_id)
        if job is None:
            out += f"Deleting the job = {job_id} ...ERROR.\nCannot frag {job_id} ; You are not the right user.\n"
            rc = 1
            continue
        if job["state"] in ("Waiting", "Running"):
            update(job["key"], cancel=True)
        out += f"Deleting the job = {job_id} ...REGISTERED.\n"
    if rc == 0:
        out += f"The job(s) [ {' '.join(args)} ] will be deleted in the near future.\n"
    answer(out, "", rc)


COMMANDS = {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scontrol": scontrol, "scancel": scancel,
            "srun": srun, "oarsub": oarsub, "oarstat": oarstat, "oardel": oardel}

if __name__ == "__main__":
    if sys.argv[1] == "_run":
        run(sys.argv[2])
    else:
        COMMANDS[sys.argv[1]](sys.argv[2:])
