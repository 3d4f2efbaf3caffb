"""Run one cell: build the model, warm up, then time and meter a steady-state window.

The window holds counted iterations only: model build, data creation,
compilation (traced during warm-up) and the meter's start-up all happen
before it opens. The device is synchronised after every iteration, so each
latency covers finished work and the iterations tile the window exactly.
"""
from __future__ import annotations

import math
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from jobs.catalog import get_test
from jobs.meters import JOULES_PER_KWH


def measure_window(step, sync, duration_s: float | None, iterations: int | None) -> dict:
    """Run `step` back to back until the window is full; return its timings.

    With `iterations`, exactly that many; with `duration_s`, until the window
    reaches it (the last iteration is completed and counted, never cut).
    """
    latencies = []
    sync()
    start_unix = time.time()
    start = previous = time.perf_counter()
    while True:
        step()
        sync()
        now = time.perf_counter()
        latencies.append(now - previous)
        previous = now
        if iterations is not None:
            if len(latencies) >= iterations:
                break
        elif now - start >= duration_s:
            break
    return {"start": start, "end": previous, "latencies": latencies,
            "start_unix": start_unix, "end_unix": start_unix + (previous - start)}


def latency_stats(latencies: list) -> dict:
    ordered = sorted(latencies)

    def percentile(q: float) -> float:  # linear interpolation, as numpy's default
        position = (len(ordered) - 1) * q
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "mean": statistics.fmean(ordered),
        "std": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "p50": percentile(0.50),
        "p95": percentile(0.95),
        "min": ordered[0],
        "max": ordered[-1],
    }


def energy_record(energy, samples: int, window_s: float, config: dict, idle: dict | None = None) -> dict:
    """Gross energy per domain with its source, idle-corrected net energy, confidence flags, CO2."""
    domains, notes, low_confidence = {}, list(energy.notes), []
    idle_joules = 0.0
    for name, domain in sorted(energy.domains.items()):
        record = domain.record()
        if idle is not None:
            if idle["sources"].get(name) == domain.source:
                record["idle_w"] = idle["power_w"][name]
                record["net_joules"] = domain.joules - record["idle_w"] * window_s
                idle_joules += record["idle_w"] * window_s
            else:
                notes.append(f"{name}: idle baseline measured with {idle['sources'].get(name)}, window with "
                             f"{domain.source}: no net energy for this domain")
        minimum = config["min_window_gpu_s"] if domain.via == "nvml" else config["min_window_node_s"]
        if window_s < minimum:
            low_confidence.append(f"{name}: window of {window_s:.1f} s is shorter than the {minimum:g} s "
                                  f"a {domain.source} reading needs")
        domains[name] = record
    total = sum(d["joules"] for d in domains.values())
    measured = [d["measured"] for d in domains.values()]
    kind = "measured" if measured and all(measured) else ("estimated" if not any(measured) else "mixed")
    has_net = bool(domains) and all("net_joules" in d for d in domains.values())
    return {
        "domains": domains,
        "alternatives": energy.alternatives,
        "total_joules": total,
        "total_kind": kind,  # measured only when every domain came from a hardware counter
        "joules_per_sample": total / samples,
        "idle": idle,
        "total_net_joules": total - idle_joules if has_net else None,
        "net_joules_per_sample": (total - idle_joules) / samples if has_net else None,
        "low_confidence": low_confidence,
        "notes": notes,
        "meter_duration_s": energy.duration_s,
        "meter_details": energy.details,
        "co2": {
            # Raw energy above excludes PUE; CO2 applies it: kWh x PUE x intensity.
            "grams": total / JOULES_PER_KWH * config["pue"] * config["carbon_intensity_g_per_kwh"],
            "carbon_intensity_g_per_kwh": config["carbon_intensity_g_per_kwh"],
            "pue": config["pue"],
            "country_iso_code": config["country_iso_code"],
            "factor_source": config.get("factor_source"),
        },
    }


def _phase(cell_dir: Path, name: str) -> None:
    """Mark the job's phase (idle/build/warmup/window/post) where jobs.records can record it."""
    from jobs import records

    write_phase = getattr(records, "write_phase", None)
    if write_phase is not None:
        write_phase(cell_dir, name)


def run_cell(cell: dict, cell_dir: Path) -> dict:
    """Everything but the status bookkeeping: returns the result's measured part."""
    from jobs import backends

    params = cell["params"]
    from jobs import workers  # scale: a multi-worker cell's job spawns its workers and merges their results

    if workers.spawns_workers(cell):
        return workers.run_workers(cell, cell_dir)
    # First, before anything imports Keras: Keras picks its backend once, at import.
    backend = params.get("backend", backends.DEFAULT_BACKEND)
    from jobs import distributed  # scale: data parallel (None for an unscaled cell)

    distributed.prepare(params, cell.get(distributed.WORKER_KEY))
    if params.get("phase") == "fit":  # training to quality on real data: its own module (selects the backend)
        from jobs.fit import run_fit

        return run_fit(cell, cell_dir)
    backends.select_backend(backend)
    parallel = distributed.setup(cell)  # before any other op: TensorFlow requires it for its strategies

    from jobs import hostinfo, workload
    from jobs.idle import idle_baseline
    from jobs.meters import build_meters
    from jobs.meters.evidence import CellEvidence

    test = get_test(params["test"])
    config = cell["energy"]
    timings = {}

    expected_gpus = cell.get("node", {}).get("gpu_count", 0)
    gpus_seen = backends.gpus_seen()
    title = backends.get_backend(backend).title
    if expected_gpus and not gpus_seen:
        raise RuntimeError(f"node type {params['node_type']} promises {expected_gpus} GPU(s) but {title} "
                           f"sees none: check the CUDA build of {title} (see docs/backends.md) and the "
                           "allocation (CUDA_VISIBLE_DEVICES); refusing to report CPU numbers as GPU ones")

    clock = time.perf_counter()
    # scale: one reading per host, by its first worker; the others run no meters
    meters = build_meters(cell_dir, cell, config) if workers.meters_here(cell) else workers.unmetered(cell)
    timings["meters_setup_s"] = time.perf_counter() - clock
    evidence = CellEvidence(cell, meters)  # evidence (#14): load, knobs, trace, state
    try:
        evidence.check_load()  # evidence (#14)
        # Before the model exists: the node is as idle as this job can make it.
        _phase(cell_dir, "idle")
        evidence.cool_down(Path(cell_dir).parent.parent)  # evidence (#14): bounded, to the idle baseline's temperatures
        clock = time.perf_counter()
        if parallel is not None:  # scale: every worker of the host is idle while its baseline is measured
            parallel.barrier()
        idle = idle_baseline(meters, Path(cell.get("campaign_dir") or Path(cell_dir).parent.parent),  # scale
                             config["idle_s"], config["idle_reuse_s"], cell["id"])
        if parallel is not None:  # scale
            parallel.barrier()
        timings["idle_s"] = time.perf_counter() - clock
        evidence.begin()  # evidence (#14): knobs set, trace recording starts (warm-up is its front margin)

        _phase(cell_dir, "build")
        clock = time.perf_counter()
        workload.set_precision(params["precision"])
        backends.seed_everything(params["seed"] + params["repetition"])
        input_shape = tuple(params["input_shape"])
        sub = next(s for s in test.subtests if s.id == params["subtest"])
        with distributed.scope(parallel):  # scale: variables mirrored over the replicas
            model = test.load_builder()(input_shape, sub.output_shape)
        timings["build_s"] = time.perf_counter() - clock

        clock = time.perf_counter()
        output_shape = tuple(model.output_shape[1:])  # the real one, for any input size
        x, y = workload.synthetic_batch(test.task, params["batch_size"], input_shape, output_shape,
                                        params["seed"])
        step = (workload.make_step(model, params["phase"], x, y, params["execution"]) if parallel is None
                else parallel.make_step(model, params["phase"], x, y, params["execution"]))  # scale
        timings["data_s"] = time.perf_counter() - clock

        _phase(cell_dir, "warmup")
        clock = time.perf_counter()
        warmup_latencies = []
        for _ in range(params["warmup_iterations"]):
            start = time.perf_counter()
            step()
            step.sync()
            warmup_latencies.append(time.perf_counter() - start)
        probe = step()  # where did the ops run? (outside the window)
        step.sync()
        timings["warmup_s"] = time.perf_counter() - clock
        timings["warmup_latencies_s"] = warmup_latencies
        compute_device = backends.placement(probe)
        if expected_gpus and not backends.placement_on_gpu(compute_device):
            raise RuntimeError(f"node type {params['node_type']} promises {expected_gpus} GPU(s) and {title} "
                               f"sees {gpus_seen}, but the step ran on {compute_device}: refusing to report "
                               "CPU numbers as GPU ones")

        evidence.window_opens()  # evidence (#14): machine state at the start
        _phase(cell_dir, "window")
        if parallel is not None:  # scale: every worker opens its meters on the same barrier
            parallel.barrier()
        meters.start()
        window = measure_window(step, step.sync, params["duration_s"], params["iterations"])
        if parallel is not None:  # ...and closes them on the same barrier
            parallel.barrier()
        energy = meters.stop()
        evidence.window_closed(window)  # evidence (#14): state at the end, back margin, knobs restored
        _phase(cell_dir, "post")
    finally:
        evidence.close()  # evidence (#14): before meters.close(), which shuts NVML down
        meters.close()

    iterations = len(window["latencies"])
    samples = iterations * params["batch_size"]
    duration = window["end"] - window["start"]
    trainable = sum(int(math.prod(v.shape)) for v in model.trainable_weights)
    return evidence.into({  # evidence (#14): trace.parquet, gate verdict, uncertainty, state, knobs
        "host": hostinfo.host_record(),
        "software": hostinfo.software_record(),
        "devices": {
            "backend": backend,
            "execution": step.execution,
            "compute_device": compute_device,
            "backend_gpus": gpus_seen,
            "tf_gpus": gpus_seen if backend == "tensorflow" else [],  # kept for older readers
            "expected_gpus": expected_gpus,
        },
        "model": {"total_params": model.count_params(), "trainable_params": trainable,
                  "reference_total_params": test.total_params,
                  "reference_trainable_params": test.trainable_params,
                  "output_shape": list(output_shape)},
        "setup": timings,
        "window": {
            "duration_s": duration,
            "start_utc": datetime.fromtimestamp(window["start_unix"], timezone.utc).isoformat(),
            "end_utc": datetime.fromtimestamp(window["end_unix"], timezone.utc).isoformat(),
            "start_unix": window["start_unix"],
            "end_unix": window["end_unix"],
            "iterations": iterations,
            "samples": samples,
            "throughput_samples_per_s": samples / duration,
            "latency_s": latency_stats(window["latencies"]),
        },
        "energy": energy_record(energy, samples, duration, config, idle),
        **({} if parallel is None else {"parallel": parallel.record()}),  # scale
    }, cell_dir)
