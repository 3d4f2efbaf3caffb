"""How long a campaign should take, from what its sweep asks for: `expand --estimate`.

Windows given as `duration_s`, idle baselines and cooldowns are requested times, known in
advance. Windows given as `iterations`, warm-ups and each cell's start (Python, TensorFlow,
model build, compilation) depend on the model and the node, unknown before a run: they use the
stated guesses below, and the estimate says how much of its total is guessed. A temperature-gated
cooldown (`cooldown:`) waits until the node is back near its idle temperatures, at most `max_s` a cell:
how long is unknown, so it is not in the total; its bound is given beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

GUESS_ITERATION_S = 0.5   # one training or inference iteration (window in iterations, warm-up)
GUESS_START_S = 30.0      # per cell: process start, TensorFlow import, model build, first compilation


@dataclass(frozen=True)
class CellEstimate:
    cell: object
    start_s: float       # guessed
    warmup_s: float      # guessed
    window_s: float
    window_guessed: bool

    @property
    def total_s(self) -> float:
        return self.start_s + self.warmup_s + self.window_s

    @property
    def guessed_s(self) -> float:
        return self.start_s + self.warmup_s + (self.window_s if self.window_guessed else 0.0)


@dataclass(frozen=True)
class Estimate:
    cells: list            # CellEstimate, in execution order
    idle_s: dict           # node type -> seconds of idle baselines
    cooldown_s: dict       # node type -> seconds of cooldowns between cells
    temperature_wait_max_s: dict  # node type -> the most the temperature-gated cooldowns may add

    def per_node_type(self) -> dict:
        """node type -> (total seconds, guessed seconds); a node type runs its cells one after another."""
        out = {}
        for c in self.cells:
            total, guessed = out.get(c.cell.node_type, (0.0, 0.0))
            out[c.cell.node_type] = (total + c.total_s, guessed + c.guessed_s)
        return {nt: (total + self.idle_s.get(nt, 0.0) + self.cooldown_s.get(nt, 0.0), guessed)
                for nt, (total, guessed) in out.items()}

    @property
    def total_s(self) -> float:
        return sum(total for total, _ in self.per_node_type().values())

    @property
    def guessed_s(self) -> float:
        return sum(guessed for _, guessed in self.per_node_type().values())


def estimate(spec, cells: list) -> Estimate:
    sweep = spec.sweep
    per_cell = []
    for cell in cells:
        window_guessed = cell.duration_s is None
        window = cell.iterations * GUESS_ITERATION_S if window_guessed else float(cell.duration_s)
        per_cell.append(CellEstimate(cell, GUESS_START_S, cell.warmup_iterations * GUESS_ITERATION_S, window,
                                     window_guessed))
    busy: dict = {}
    count: dict = {}
    for c in per_cell:
        busy[c.cell.node_type] = busy.get(c.cell.node_type, 0.0) + c.total_s
        count[c.cell.node_type] = count.get(c.cell.node_type, 0) + 1
    cooldown = {nt: sweep.cooldown_s * (n - 1) for nt, n in count.items()}
    idle = {}
    for nt, seconds in busy.items():  # one baseline per node, measured again once `idle_reuse_s` has passed
        if sweep.energy.idle_s > 0:
            reuse = max(sweep.energy.idle_reuse_s, 1.0)
            idle[nt] = sweep.energy.idle_s * (1 + int((seconds + cooldown[nt]) // reuse))
    waits = {nt: sweep.cooldown.max_s * n for nt, n in count.items()} if sweep.cooldown is not None else {}
    return Estimate(per_cell, idle, cooldown, waits)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
