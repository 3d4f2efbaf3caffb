"""Idle baseline: the node's power with nothing running, measured with the window's own meters.

Measured before the model is built, then kept in the campaign folder
(idle/<host>.json) and reused by later cells on the same host for
`idle_reuse_s`, so a campaign does not pay it per cell. The record keeps the
machine state (temperatures) at the end of the idle window: the baseline
that `cooldown_baseline` gives to jobs.meters.state.wait_until_cool.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

from jobs.meters.state import idle_temperatures, machine_state
from jobs.records import atomic_write_json, now_iso, read_json


def idle_baseline(meters, campaign_dir: Path, seconds: float, reuse_s: float, cell_id: str) -> dict | None:
    if seconds <= 0:
        return None
    host = socket.gethostname()
    cache = Path(campaign_dir) / "idle" / f"{host}.json"
    try:
        cached = read_json(cache)
        if time.time() - cached["measured_at_unix"] <= reuse_s and cached["duration_s"] >= seconds * 0.9:
            return {**cached, "reused": True}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: measure afresh
    reading = meters.measure_idle(seconds)
    nvml, handles = meters.nvml() if hasattr(meters, "nvml") else (None, {})
    record = {
        "host": host,
        "measured_at": now_iso(),
        "measured_at_unix": time.time(),
        "measured_by_cell": cell_id,
        "duration_s": reading.duration_s,
        "power_w": {name: d.joules / reading.duration_s for name, d in reading.domains.items()},
        "sources": {name: d.source for name, d in reading.domains.items()},
        "state": machine_state(nvml, handles),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, record)
    return {**record, "reused": False}


def cooldown_baseline(campaign_dir: Path, host: str | None = None) -> dict | None:
    """{sensor: °C} of the host's idle baseline in this campaign, or None when there is none yet."""
    try:
        cached = read_json(Path(campaign_dir) / "idle" / f"{host or socket.gethostname()}.json")
    except (OSError, ValueError):
        return None
    return idle_temperatures(cached.get("state") or {}) or None
