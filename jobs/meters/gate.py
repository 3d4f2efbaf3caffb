"""The validity gate: does a cell's telemetry cover its window well enough to trust its energy?

Per domain, on the trace rows of the source that produced the domain's figure:
coverage of [t0, t1] by samples (a spacing over GAP_PERIODS expected periods
is a gap), the longest spacing, counter wraps (a drop the counter's range
explains) and backwards steps (a drop it does not: a reset, a driver reload),
devices that never answered or stopped answering, GPU clock-throttle reasons
raised in the window (NVML's bitmask, nvml.h), and temperature drift (the
trace's NVML temperatures; the CPU's from the machine state at both edges).

A cell fails when coverage < min_coverage, the longest gap > max_gap_s, a
counter went backwards, a wrap happened between reads so far apart that
more than one wrap may hide in them, a device is missing, the GPU throttled
for heat or a hardware slowdown, or a temperature drifted more than
max_temperature_drift_c. Power capping (SW power cap), idle and
application-clock reasons are reported, not failed: they are the setting
being measured, not a telemetry fault.
"""
from __future__ import annotations

import statistics

from jobs.meters.trace import is_nan

GAP_PERIODS = 2.5
DEFAULTS = {"min_coverage": 0.95, "max_gap_s": 2.0, "max_temperature_drift_c": 15.0}

# nvml.h, nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*)
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
FAILING_THROTTLE = {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}


def throttle_names(mask: int) -> list:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def spacing(times: list, t0: float, t1: float, threshold: float) -> tuple:
    """(gaps [[a, b]], longest spacing) of sample times framing and inside [t0, t1]."""
    before = [t for t in times if t <= t0]
    inside = [t for t in times if t0 < t < t1]
    after = [t for t in times if t >= t1]
    frame = [before[-1] if before else t0, *inside, after[0] if after else t1]
    gaps, longest = [], 0.0
    for a, b in zip(frame, frame[1:]):
        a, b = max(a, t0), min(b, t1)
        longest = max(longest, b - a)
        if b - a > threshold:
            gaps.append([a, b])
    return gaps, longest


def _counter_steps(points: list, range_j: float | None, median_power: float | None) -> tuple:
    """(wraps, ambiguous wraps [(t, dt)], backwards [(t, drop_j)]) in a counter's (t, energy_j) reads.

    A wrap is ambiguous when the reads around it are so far apart that, at the counter's median
    power, more than half its range passed between them: one more wrap could hide there.
    """
    wraps, ambiguous, backwards = 0, [], []
    for (ta, ea), (tb, eb) in zip(points, points[1:]):
        if eb >= ea:
            continue
        unwrapped = range_j - ea + eb if range_j else None
        # A wrap if the increase it implies fits the counter's usual power (or half its range without one).
        plausible = unwrapped is not None and (
            unwrapped / (tb - ta) <= 3 * median_power if median_power and tb > ta else unwrapped <= range_j / 2)
        if plausible:
            wraps += 1
            if median_power and median_power * (tb - ta) > range_j / 2:
                ambiguous.append((tb, tb - ta))
        else:
            backwards.append((tb, ea - eb))
    return wraps, ambiguous, backwards


def domain_gate(rows: list, probes: list, domain: str, source: str | None, t0: float, t1: float,
                period_s: float, config: dict, failed_reads: dict | None = None,
                state: dict | None = None) -> dict:
    config = {**DEFAULTS, **(config or {})}
    mine = [r for r in rows if r[1] == domain and (source is None or r[3] == source)]
    if source is not None and not mine:  # the figure's own meter left no trace: judge what there is
        mine = [r for r in rows if r[1] == domain]
        source = None
    sources = sorted({r[3] for r in mine}) or ([source] if source else [])
    expected = sorted({p["device"] for p in probes if p["domain"] == domain
                       and (source is None or p["source"] == source)})
    devices = sorted({r[2] for r in mine} | set(expected))
    threshold = GAP_PERIODS * period_s
    max_gap = max(config["max_gap_s"], 5 * period_s)
    duration = t1 - t0
    reasons, missing, coverage, longest = [], [], 1.0, 0.0
    wraps, backwards, throttled, drift = 0, 0, set(), {}
    if not mine:
        reasons.append(f"{domain}: no trace samples")
        coverage = 0.0
    for device in devices:
        device_rows = sorted(r for r in mine if r[2] == device)
        times = [r[0] for r in device_rows]
        if not [t for t in times if t0 <= t <= t1]:
            missing.append(device)
            reasons.append(f"{domain}: {device} gave no sample in the window")
            coverage, longest = 0.0, max(longest, duration)
            continue
        last_inside = max(t for t in times if t <= t1)
        if not [t for t in times if t >= t1] and t1 - last_inside > threshold:
            missing.append(device)
            reasons.append(f"{domain}: {device} stopped answering {last_inside - t0:.2f} s into the "
                           f"{duration:.2f} s window")
        gaps, device_longest = spacing(times, t0, t1, threshold)
        covered = 1 - sum(b - a for a, b in gaps) / duration if duration > 0 else 0.0
        coverage, longest = min(coverage, max(0.0, covered)), max(longest, device_longest)
        for counter_source in sorted({r[3] for r in device_rows if not is_nan(r[5])}):
            points = [(r[0], r[5]) for r in device_rows if r[3] == counter_source and not is_nan(r[5])]
            probe = next((p for p in probes if p["device"] == device and p["source"] == counter_source
                          and p["domain"] == domain), {})
            powers = [r[4] for r in device_rows if r[3] == counter_source and not is_nan(r[4])]
            median = statistics.median(powers) if powers else None
            n_wraps, ambiguous, steps = _counter_steps(points, probe.get("counter_range_j"), median)
            wraps += n_wraps
            backwards += len(steps)
            for t, drop in steps:
                reasons.append(f"{domain}: {device} counter went backwards by {drop:.3f} J at "
                               f"{t - t0:+.2f} s (reset or driver reload)")
            for t, dt in ambiguous:
                reasons.append(f"{domain}: {device} counter wrapped between reads {dt:.1f} s apart, "
                               "longer than half its wrap period: more than one wrap may be hidden")
        in_window = [r for r in device_rows if t0 <= r[0] <= t1]
        for r in in_window:
            if r[7] is not None:
                throttled.update(throttle_names(int(r[7])))
        temperatures = [r[6] for r in in_window if not is_nan(r[6])]
        if len(temperatures) >= 2:
            drift[device] = max(temperatures) - min(temperatures)
    if coverage < config["min_coverage"] and mine:
        reasons.append(f"{domain}: samples cover {coverage:.0%} of the window (< {config['min_coverage']:.0%})")
    if longest > max_gap and mine:
        reasons.append(f"{domain}: longest gap between samples {longest:.2f} s (> {max_gap:g} s)")
    for name in sorted(throttled & FAILING_THROTTLE):
        reasons.append(f"{domain}: clocks throttled during the window ({name})")
    if domain == "cpu" and state:
        start, end = (state.get("start") or {}).get("cpu_temperature_c"), (state.get("end") or {}).get(
            "cpu_temperature_c")
        if start is not None and end is not None:
            drift["cpu"] = abs(end - start)
    worst = max(drift.values()) if drift else None
    if worst is not None and worst > config["max_temperature_drift_c"]:
        where = max(drift, key=drift.get)
        reasons.append(f"{domain}: temperature drifted {worst:.1f} C on {where} during the window "
                       f"(> {config['max_temperature_drift_c']:g} C)")
    failed = {k: v for k, v in (failed_reads or {}).items() if k.startswith(f"{domain}/")}
    return {"sources": sources, "devices": devices, "samples": len([r for r in mine if t0 <= r[0] <= t1]),
            "expected_period_s": period_s, "coverage": coverage, "longest_gap_s": longest, "wraps": wraps,
            "backwards": backwards, "missing_devices": missing, "failed_reads": failed,
            "throttle_reasons": sorted(throttled), "temperature_drift_c": worst,
            "valid": not reasons, "reasons": reasons}


def gate(trace, t0: float, t1: float, chosen_sources: dict, config: dict | None = None,
         state: dict | None = None) -> dict:
    """{valid, invalid_reasons, gate: {domain: ...}} for the domains whose energy is reported."""
    per = {domain: domain_gate(trace.rows, trace.probes, domain, source, t0, t1, trace.period_s, config,
                               trace.failed_reads, state)
           for domain, source in sorted(chosen_sources.items())}
    reasons = [reason for entry in per.values() for reason in entry["reasons"]]
    if not per:
        reasons.append("no energy domain to judge")
    return {"valid": not reasons, "invalid_reasons": reasons, "gate": per}
