"""The scale axes of a sweep: devices per node and nodes, the global batch, and their checks.

A sweep is *scaled* when it names `devices_per_node` or `nodes` anywhere (matrix,
include, exclude). Its cells then carry the scale in their params (so in their ids
and group keys) and run data parallel through jobs/distributed.py, the 1-device,
1-node cell included: a scaling curve compares the same code at every point. An
unscaled sweep is unchanged (same params, same ids as before).

Global batch (`batch_size` in params, the samples one step processes):
- weak scaling (default): the sweep's batch is per device; global = batch x devices x nodes;
- strong scaling: the sweep's batch is global; per device = batch / (devices x nodes), which must divide.

Resource requests are checked against the node catalog before anything is written.
"""
from __future__ import annotations

import os
from itertools import product

from jobs import distributed
from orchestrator.errors import UserError
from orchestrator.nodes import node_types

SCALE_AXES = ("devices_per_node", "nodes")
ALL = "all"


def is_scaled(sweep) -> bool:
    m = sweep.matrix
    entries = [*sweep.include, *sweep.exclude]
    return (m.devices_per_node is not None or m.nodes is not None
            or any(getattr(e, k) is not None for e in entries for k in SCALE_AXES))


def with_scale_axes(spec, combos: list, fixed: dict | None = None) -> list:
    """Each combination times the sweep's scale values (those in `fixed`, an include's axes, win)."""
    sweep = spec.sweep
    if not is_scaled(sweep):
        return combos
    fixed = fixed or {}
    devices = [fixed["devices_per_node"]] if "devices_per_node" in fixed else (sweep.matrix.devices_per_node or [1])
    nodes = [fixed["nodes"]] if "nodes" in fixed else (sweep.matrix.nodes or [1])
    out = []
    for combo, d, n in product(combos, devices, nodes):
        axes, layers = combo if isinstance(combo, tuple) else (combo, None)
        axes = {**axes, "devices_per_node": d, "nodes": n}
        out.append(axes if layers is None else (axes, layers))
    return out


def device_capacity(node_type: str) -> int:
    """How many data-parallel devices one node of this type has: its GPUs, else its CPU cores
    (logical CPU devices, for tests and CPU nodes); the `local` type counts this machine's cores."""
    node = node_types()[node_type]
    if node.gpu_count:
        return node.gpu_count
    return int(node.extra.get("cpu_cores") or os.cpu_count() or 1)


def scale_params(spec, axes: dict, settings: dict, origin: dict, batch: int) -> dict:
    """The scale part of a cell's params (empty for an unscaled sweep)."""
    if "devices_per_node" not in axes:
        return {}
    devices = axes["devices_per_node"]
    if devices == ALL:
        devices = device_capacity(axes["node_type"])
    nodes = axes["nodes"]
    replicas = devices * nodes
    scaling = settings.get("batch_scaling", "weak")
    if scaling == "weak":
        per_device, global_batch = batch, batch * replicas
    else:
        if batch % replicas:
            key = "batch_size" if "batch_size" in origin else "batch_scaling"
            raise spec.error(origin.get(key, ()) + (key,),
                             f"strong scaling splits the global batch {batch} over {replicas} devices "
                             f"({devices} per node x {nodes} node(s)): it must divide evenly")
        per_device, global_batch = batch // replicas, batch
    return {"devices_per_node": devices, "nodes": nodes, "batch_scaling": scaling,
            "per_device_batch": per_device, "batch_size": global_batch,
            "data_parallel": distributed.strategy_name(axes["backend"], devices, nodes)}


def _where_value(spec, key: str, value) -> str:
    """file:line: key of where a scale value was asked for: the matrix list, else the first include naming it."""
    listed = getattr(spec.sweep.matrix, key)
    if listed is not None and value in listed:
        return spec.where("matrix", key, listed.index(value))
    for index, entry in enumerate(spec.sweep.include):
        if getattr(entry, key) == value:
            return spec.where("include", index, key)
    if key == "devices_per_node" and value != ALL:  # `all`, resolved from the catalog
        return _where_value(spec, key, ALL)
    return spec.where("matrix", key)


def check(spec, cells: list, launcher: str) -> None:
    """Refuse, all at once and before submission, scale requests the catalog, backend or launcher cannot meet."""
    lines = []

    def refuse(line):
        if line not in lines:
            lines.append(line)

    for cell in cells:
        p = cell.params
        if "devices_per_node" not in p:
            return  # unscaled sweep
        requested = p["devices_per_node"]
        capacity = device_capacity(p["node_type"])
        if requested > capacity:
            refuse(f"{_where_value(spec, 'devices_per_node', requested)}: {requested} devices per node, but node type "
                   f"{p['node_type']} has {capacity} ({'GPUs' if node_types()[p['node_type']].gpu_count else 'CPU cores'})")
        reason = distributed.refusal(p["backend"], p["devices_per_node"], p["nodes"],
                                     bool(node_types()[p["node_type"]].gpu_count))
        if reason:
            backends = spec.sweep.matrix.backends
            where = (spec.where("matrix", "backends", backends.index(p["backend"])) if p["backend"] in backends
                     else _where_value(spec, "nodes", p["nodes"]))
            refuse(f"{where}: {p['backend']} with {p['devices_per_node']} device(s) x {p['nodes']} node(s): {reason}")
        if p["nodes"] > 1 and p.get("iterations") is None:
            refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {p['nodes']} nodes need `iterations` for the window, "
                   "not duration_s: every worker must run the same number of collective steps")
        if p["nodes"] > 1 and launcher == "local":
            cores = os.cpu_count() or 1
            if p["nodes"] > cores:
                refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: the local launcher runs nodes: {p['nodes']} as "
                       f"{p['nodes']} worker processes on loopback, but this machine has {cores} cores")
            if p["devices_per_node"] * p["nodes"] > max(cores, node_types()[p["node_type"]].gpu_count):
                refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {p['nodes']} loopback workers x "
                       f"{p['devices_per_node']} devices exceed this machine's {cores} cores")
        hosts = node_types()[p["node_type"]].extra.get("nodes")  # the cluster's node count, where the catalog has it
        if launcher == "oar" and hosts and p["nodes"] > hosts:
            refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: nodes: {p['nodes']} asks OAR for {p['nodes']} whole "
                   f"hosts, but node type {p['node_type']} has {hosts}")
        if launcher == "slurm" and hosts and p["nodes"] // slurm_tasks_per_node(spec) > hosts:
            refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {p['nodes']} workers need "
                   f"{p['nodes'] // slurm_tasks_per_node(spec)} Slurm nodes, but node type {p['node_type']} "
                   f"has {hosts}")
        if p["nodes"] > 1 and launcher == "slurm":
            per = slurm_tasks_per_node(spec)
            node = node_types()[p["node_type"]]
            cores = int(node.extra.get("cpu_cores") or 0)
            if p["nodes"] % per:
                refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {p['nodes']} workers do not fill Slurm nodes of "
                       f"slurm.ntasks_per_node: {per} tasks evenly")
            elif node.gpu_count and p["devices_per_node"] * per > node.gpu_count:
                refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {per} task(s) per node x {p['devices_per_node']} "
                       f"GPU(s) each exceed node type {p['node_type']}'s {node.gpu_count} GPUs")
            elif cores and per > cores:
                refuse(f"{_where_value(spec, 'nodes', p['nodes'])}: {per} tasks per node exceed node type "
                       f"{p['node_type']}'s {cores} cores")
    if lines:
        raise UserError(f"invalid sweep {spec.path}", lines)


# --- Slurm: one task per worker, in one srun step -----------------------------------------------------------

def slurm_tasks_per_node(spec) -> int:
    """Workers per Slurm node: the sweep's `slurm.ntasks_per_node` (default 1: one worker owns a node's devices)."""
    value = (spec.sweep.slurm or {}).get("ntasks_per_node") if hasattr(spec.sweep, "slurm") else None
    return int(value) if isinstance(value, int) and value > 0 else 1


def slurm_layout(params: dict, tasks_per_node: int, gpu_count: int) -> dict:
    """The sbatch layout of one cell: {} for a one-worker cell, else --nodes, --ntasks-per-node (and
    --gpus-per-node on GPU nodes). `nodes: N` is N workers; a Slurm node holds `tasks_per_node` of them."""
    workers = int(params.get("nodes") or 1)
    if workers <= 1:
        return {}
    layout = {"nodes": workers // tasks_per_node, "ntasks_per_node": tasks_per_node}
    if gpu_count:
        layout["gpus_per_node"] = int(params["devices_per_node"]) * tasks_per_node
    return layout
