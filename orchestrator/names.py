"""What a user types for a campaign: a folder, a bare name found under results/, or a built-in reference.

`status/wait/collect/report/cancel/compare NAME` all go through `resolve_campaign`,
so `benchmark-tracker report smoke` finds `results/smoke` as `sweep smoke` wrote it.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from orchestrator.errors import UserError

DEFAULT_OUTPUT = Path("results")  # the sweeps' default `output`


def resolve_campaign(arg: str | Path, allow_reference: bool = False, allow_node_type: bool = False) -> str:
    """The campaign folder (as a string) for `arg`; '@node type' and reference names are kept as given."""
    text = str(arg)
    suffix = ""
    if allow_node_type and "@" in text and not Path(text).exists():
        text, node_type = text.rsplit("@", 1)
        suffix = f"@{node_type}"
    path = Path(text)
    if path.is_dir():
        return text + suffix
    if allow_reference:
        from orchestrator.historical import REFERENCES

        if text in REFERENCES:
            return text + suffix
    if len(path.parts) == 1 and (DEFAULT_OUTPUT / path).is_dir():
        return str(DEFAULT_OUTPUT / path) + suffix
    known = sorted(p.name for p in DEFAULT_OUTPUT.iterdir() if p.is_dir()) if DEFAULT_OUTPUT.is_dir() else []
    close = difflib.get_close_matches(path.name, known, n=1)
    hints = [f"did you mean {DEFAULT_OUTPUT / close[0]}?"] if close else []
    if known and not close:
        hints.append(f"campaigns in {DEFAULT_OUTPUT}/: {', '.join(known[:10])}")
    raise UserError(f"no campaign {text!r} (looked for the folder {text} and {DEFAULT_OUTPUT / path.name})", hints)
