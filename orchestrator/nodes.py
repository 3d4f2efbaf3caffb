"""Node types as data: what hardware a cell expects, merged from catalog files."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: catalogs load in ms, not 0.5 s
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
        for name, entry in (yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}).items():
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


# Per-site CO2 factors, as data. A node type's `site` key selects its row.
SITE_FACTOR_FILES = (ROOT / "grid5000" / "site_factors.yaml",)
DEFAULT_FACTORS = {"pue": 1.0, "carbon_intensity_g_per_kwh": 56.039, "country_iso_code": "FRA",
                   "source": "default: codecarbon 3.3.2 France 2023 (lifecycle), PUE 1.0"}


@lru_cache(maxsize=None)
def site_factors() -> dict:
    table = {}
    for path in SITE_FACTOR_FILES:
        if path.exists():
            table.update({k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items()
                          if not k.startswith("_")})
    return table


def energy_factors(node_type: str, configured: dict) -> dict:
    """CO2 factors for a cell: the sweep's where set, else the node's site table, else the defaults."""
    site = node_types()[node_type].extra.get("site")
    base = dict(site_factors().get(site) or DEFAULT_FACTORS)
    base["source"] = f"site {site}: {base['source']}" if site in site_factors() else base["source"]
    chosen = {k: (configured[k] if configured.get(k) is not None else base[k])
              for k in ("pue", "carbon_intensity_g_per_kwh", "country_iso_code")}
    overridden = [k for k in chosen if configured.get(k) is not None]
    chosen["source"] = (f"sweep ({', '.join(overridden)}); otherwise {base['source']}" if overridden
                        else base["source"])
    return chosen
