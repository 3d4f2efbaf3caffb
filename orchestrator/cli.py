"""`benchmark-tracker`: parse arguments, call one function per verb, turn user errors into exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from orchestrator import __version__
from orchestrator.errors import UserError


def _table(rows: list, columns: list) -> str:
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_expand(args) -> int:
    from orchestrator.matrix import expand
    from orchestrator.spec import load_sweep

    spec = load_sweep(args.sweep)
    expansion = expand(spec)
    rows = [{"id": c.id, **c.params, "input_shape": "x".join(map(str, c.params["input_shape"])),
             "window": f"{c.duration_s:g} s" if c.duration_s is not None else f"{c.iterations} it",
             "implemented": c.implemented} for c in expansion.cells]
    if args.json:
        print(json.dumps({"sweep": spec.sweep.name, "cells": [{"id": c.id, "implemented": c.implemented,
                                                               "params": c.params} for c in expansion.cells],
                          "not_implemented": expansion.not_implemented(), "notes": expansion.notes}, indent=2))
        return 0
    print(_table(rows, ["id", "test", "subtest", "phase", "node_type", "repetition", "batch_size", "input_shape",
                        "precision", "execution", "window", "implemented"]))
    print(f"\n{len(rows)} cells from {spec.path}")
    for note in expansion.notes:
        print(f"note: {note}")
    if expansion.not_implemented():
        print(f"not implemented yet (a sweep with them is refused): {', '.join(expansion.not_implemented())}")
    return 0


def cmd_sweep(args) -> int:
    from orchestrator.sweep import run_sweep

    outcome = run_sweep(args.sweep, output=args.output, rerun_failed=args.rerun_failed, force=args.force)
    if outcome.interrupted:
        print(f"interrupted; rerun the same command to resume ({outcome.campaign.root})", file=sys.stderr)
    elif outcome.ran:
        from orchestrator.collect import collect

        collected = collect(outcome.campaign.root)
        print(f"results: {outcome.campaign.root / 'results.csv'} ({len(collected.results)} cells)")
    return outcome.exit_code


def cmd_collect(args) -> int:
    from orchestrator.collect import collect

    collected = collect(Path(args.campaign))
    states = Counter(collected.results["state"]) if len(collected.results) else Counter()
    print(f"{args.campaign}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    for problem in collected.problems:
        print(f"problem: {problem}", file=sys.stderr)
    if len(collected.summary):
        columns = ["test", "subtest", "phase", "node_type", "n", "throughput_samples_per_s_mean",
                   "energy_per_sample_j_mean", "energy_kind"]
        print(collected.summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote results.csv, results.parquet, summary.csv in {args.campaign}")
    return 0


def cmd_status(args) -> int:
    from orchestrator import follow
    from orchestrator.store import Campaign

    campaign = Campaign(Path(args.campaign))
    _, cells = follow.refresh(campaign)
    for node_type, counts in sorted(follow.counts_by_node_type(campaign, cells).items()):
        parts = ", ".join(f"{counts[s]} {s}" for s in ("pending", "submitted", "running", "done", "failed")
                          if counts[s])
        print(f"{node_type}: {parts}")
    if args.verbose:
        for cell in cells:
            status = campaign.status(cell.id)
            if status["state"] == "failed":
                print(f"{cell.id} {cell.label}: {status.get('reason')}")
    return 0


def cmd_wait(args) -> int:
    from orchestrator import follow
    from orchestrator.store import Campaign

    return follow.wait(Campaign(Path(args.campaign)), poll_s=args.poll, timeout_s=args.timeout)


def cmd_cancel(args) -> int:
    from orchestrator import follow
    from orchestrator.store import Campaign

    count = follow.cancel(Campaign(Path(args.campaign)))
    print(f"cancelled {count} open cell(s) of {args.campaign}")
    return 0


def cmd_catalog(args) -> int:
    from jobs.catalog import TESTS

    tests = [{"number": t.number, "name": t.name, "title": t.title, "task": t.task, "implemented": t.implemented,
              "total_params": t.total_params, "trainable_params": t.trainable_params,
              "subtests": [{"id": s.id, "phase": s.phase, "batch": s.batch, "input_shape": list(s.input_shape),
                            "output_shape": list(s.output_shape)} for s in t.subtests]} for t in TESTS.values()]
    if args.json:
        print(json.dumps(tests, indent=2))
        return 0
    rows = [{"id": s["id"], "test": t["name"], "phase": s["phase"], "batch": s["batch"],
             "input": "x".join(map(str, s["input_shape"])), "output": "x".join(map(str, s["output_shape"])),
             "ref. params": f"{t['total_params']:,}", "implemented": "yes" if t["implemented"] else "no"}
            for t in tests for s in t["subtests"]]
    print(_table(rows, ["id", "test", "phase", "batch", "input", "output", "ref. params", "implemented"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark-tracker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("expand", help="print the cells a sweep expands to")
    p.add_argument("sweep", help="a sweep file, or a bare name looked up in sweeps/")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_expand)

    p = verbs.add_parser("sweep", help="run a sweep's cells (skips done ones), then collect")
    p.add_argument("sweep", help="a sweep file, or a bare name looked up in sweeps/")
    p.add_argument("--output", help="results folder (default: the sweep's `output`)")
    p.add_argument("--rerun-failed", action="store_true", help="run failed cells again")
    p.add_argument("--force", action="store_true", help="run every cell again, done ones included")
    p.set_defaults(func=cmd_sweep)

    p = verbs.add_parser("collect", help="build results.csv/.parquet and summary.csv for a campaign")
    p.add_argument("campaign", help="a campaign folder, e.g. results/smoke")
    p.set_defaults(func=cmd_collect)

    p = verbs.add_parser("status", help="count a campaign's cells by state and node type")
    p.add_argument("campaign")
    p.add_argument("-v", "--verbose", action="store_true", help="list failed cells with their reasons")
    p.set_defaults(func=cmd_status)

    p = verbs.add_parser("wait", help="follow a campaign until every cell is final (exit 1 if any failed)")
    p.add_argument("campaign")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between checks (default 10)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit 3)")
    p.set_defaults(func=cmd_wait)

    p = verbs.add_parser("cancel", help="cancel a campaign's open cells")
    p.add_argument("campaign")
    p.set_defaults(func=cmd_cancel)

    p = verbs.add_parser("catalog", help="list the tests and sub-tests")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalog)
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
