"""Node types as data: what hardware a cell expects, merged from catalog files."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Site catalogs are plain data files; the core reads them without knowing the site.
DEFAULT_CATALOGS = (ROOT / "orchestrator" / "node_types.yaml", ROOT / "grid5000" / "node_types.yaml")


@dataclass(frozen=True)
class NodeType:
    name: str
    description: str
    hostname_pattern: str
    gpu_count: int = 0
    gpu_model: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def matches_host(self, hostname: str) -> bool:
        return re.match(self.hostname_pattern, hostname) is not None


def catalog_paths() -> list:
    """Catalog files, in order; BENCHMARK_TRACKER_NODE_TYPES (os.pathsep-separated) adds more."""
    extra = [Path(p) for p in os.environ.get("BENCHMARK_TRACKER_NODE_TYPES", "").split(os.pathsep) if p]
    return [*DEFAULT_CATALOGS, *extra]


@lru_cache(maxsize=None)
def _load(paths: tuple) -> dict:
    types = {}
    for path in paths:
        if not path.exists():
            continue
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            gpus = entry.get("gpus") or {}
            types[name] = NodeType(
                name=name,
                description=entry.get("description", ""),
                hostname_pattern=entry["hostname_pattern"],
                gpu_count=int(gpus.get("count") or 0),
                gpu_model=gpus.get("model"),
                extra={k: v for k, v in entry.items() if k not in ("description", "hostname_pattern", "gpus")},
            )
    return types


def node_types() -> dict:
    return _load(tuple(catalog_paths()))
