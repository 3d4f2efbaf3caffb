"""Refresh the node catalog from the Grid'5000 Reference API (run it on a frontend: no credentials needed).

    python -m grid5000.refresh_catalog                 # rewrites grid5000/node_types.yaml
    python -m grid5000.refresh_catalog --data-out g5k_gpu_clusters.json --dry-run

Walks /sites, /sites/<s>/clusters and /sites/<s>/clusters/<c>/nodes, keeps the clusters whose nodes have
GPUs, summarises each one in the format of shared/data/g5k_gpu_clusters.json, then renders the catalog with
grid5000.make_node_types (retired clusters such as chifflet are kept from its RETIRED table).
From outside Grid'5000 the API wants HTTP basic auth: G5K_USER/G5K_PASSWORD or ~/.python-grid5000.yaml;
nothing is ever prompted for or printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from grid5000 import make_node_types
from grid5000.kwollect import credentials

DEFAULT_API = "https://api.grid5000.fr/stable/"
MIB = 2 ** 20
# Kwollect metrics kept in the catalog: power ones, and the DCGM exporters (per-GPU power).
KEPT_METRICS = ("power", "prom_nvgpu")


class ApiError(Exception):
    pass


def http_getter(api: str, timeout: float = 60.0):
    """get(path) -> JSON, against the live API."""
    import requests

    session = requests.Session()
    auth = credentials()

    def get(path: str):
        url = api.rstrip("/") + "/" + path.lstrip("/")
        try:
            answer = session.get(url, params={"limit": 10000}, auth=auth, timeout=timeout,
                                 headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach {url}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            hint = "; outside Grid'5000 set G5K_USER/G5K_PASSWORD" if answer.status_code == 401 else ""
            raise ApiError(f"{url} answered HTTP {answer.status_code}{hint}")
        return answer.json()

    return get


def _items(collection) -> list:
    return collection.get("items", []) if isinstance(collection, dict) else list(collection or [])


def queue_of(queues: list) -> str:
    """abaca (formerly production) when a cluster is in it, else testing, else default."""
    queues = set(queues or [])
    if queues & {"abaca", "production"}:
        return "abaca"
    if "testing" in queues and "default" not in queues:
        return "testing"
    return "default"


def summarise(site: str, cluster: dict, nodes: list) -> dict | None:
    """One GPU cluster in the data file's format, or None when its nodes have no GPU."""
    gpu_nodes = [n for n in nodes if n.get("gpu_devices")]
    if not gpu_nodes:
        return None
    node = gpu_nodes[0]
    gpus = list(node["gpu_devices"].values())
    proc, arch = node.get("processor", {}), node.get("architecture", {})
    ram = (node.get("main_memory") or {}).get("ram_size")
    metrics = {m["name"]: {"period_ms": m.get("period"), "optional_period_ms": m.get("optional_period")}
               for m in cluster.get("metrics", []) if any(k in m["name"] for k in KEPT_METRICS)}
    walltimes = [(n.get("supported_job_types") or {}).get("max_walltime") or 0 for n in nodes]
    chassis = node.get("chassis") or {}
    return {
        "site": site, "cluster": cluster["uid"], "frontend": f"f{site}", "nodes": len(nodes),
        "queue": queue_of(cluster.get("queues")), "exotic": bool(cluster.get("exotic")),
        "max_walltime_s": max(walltimes) if walltimes and min(walltimes) > 0 else 0,
        "chassis": " ".join(filter(None, [chassis.get("manufacturer"), chassis.get("name")])),
        "created_at": cluster.get("created_at"),
        "cpu": {"oar_cputype": " ".join(filter(None, [proc.get("model"), proc.get("version")])),
                "description": proc.get("other_description"), "sockets": arch.get("nb_procs"),
                "cores": arch.get("nb_cores"), "threads": arch.get("nb_threads")},
        "ram_bytes": ram, "oar_memnode_MiB": ram // MIB if ram else None,
        "gpu": {"oar_gpu_model": gpus[0].get("model"), "vendor": gpus[0].get("vendor"), "count": len(gpus),
                "memory_bytes": gpus[0].get("memory"),
                "oar_gpu_mem_MiB": gpus[0]["memory"] // MIB if gpus[0].get("memory") else None,
                "power_default_limit": gpus[0].get("power_default_limit"),
                "compute_capability": gpus[0].get("compute_capability")},
        # OAR's wattmeter property (oar-properties.rb): a wall meter or a PDU outlet is collected.
        "oar_wattmeter": "YES" if {"wattmetre_power_watt", "pdu_outlet_power_watt"} & set(metrics) else "NO",
        "kwollect_power_metrics": metrics,
    }


def fetch_clusters(get) -> list:
    clusters = []
    for site in sorted(s["uid"] for s in _items(get("sites"))):
        for cluster in sorted(_items(get(f"sites/{site}/clusters")), key=lambda c: c["uid"]):
            summary = summarise(site, cluster, _items(get(f"sites/{site}/clusters/{cluster['uid']}/nodes")))
            if summary:
                clusters.append(summary)
    return clusters


def refresh(get, api: str) -> dict:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    clusters = fetch_clusters(get)
    if not clusters:
        raise ApiError(f"{api} listed no GPU cluster: refusing to write an empty catalog")
    return {"source": f"Grid'5000 Reference API {api} ({stamp})",
            "note": "generated by python -m grid5000.refresh_catalog", "clusters": clusters}


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid5000.refresh_catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default=DEFAULT_API, help=f"API root (default {DEFAULT_API})")
    parser.add_argument("--data-out", help="also write the GPU cluster summary (JSON) here")
    parser.add_argument("--out", default=str(make_node_types.OUT), help="catalog to write")
    parser.add_argument("--dry-run", action="store_true", help="print what changes, write no catalog")
    args = parser.parse_args(argv)
    try:
        data = refresh(http_getter(args.api), args.api)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.data_out:
        Path(args.data_out).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    text = make_node_types.render(data)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    changed = text != old
    if not args.dry_run and changed:
        out.write_text(text)
    print(f"{len(data['clusters'])} GPU clusters; {out} {'would change' if args.dry_run and changed else 'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
