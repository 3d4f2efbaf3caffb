"""`benchmark-tracker dataset NAME DIR`: write a small real dataset that ships with an installed package.

Only `digits` for now: scikit-learn's bundled handwritten digits (1,797 8x8 grey PNGs, one folder
per digit), so a `kind: folder` sweep can run with nothing downloaded. Sweeps can also read the
same data directly with `dataset: {kind: digits}`.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.errors import UserError

DATASETS = ("digits",)


def write_dataset(name: str, out: Path) -> dict:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if p.name not in {str(n) for n in range(10)}):
        raise UserError(f"{out} holds other files: give an empty or new folder")
    from jobs.data import write_digits_folder

    return write_digits_folder(out)
