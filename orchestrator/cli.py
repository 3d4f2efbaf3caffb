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
    print(_table(rows, ["id", "test", "subtest", "phase", "node_type", "backend", "repetition", "batch_size",
                        "input_shape",
                        "precision", "execution", "window", "implemented"]))
    print(f"\n{len(rows)} cells from {spec.path}")
    reps = spec.sweep.matrix.repetitions
    if not isinstance(reps, int):
        print(f"repetitions: adaptive, {reps.min} to {reps.max} per group, until the 95 % CI of {reps.metric} "
              f"is within ±{reps.target_ci:.1%} of the mean; cells not needed are skipped")
    for note in expansion.notes:
        print(f"note: {note}")
    if expansion.not_implemented():
        print(f"not implemented yet (a sweep with them is refused): {', '.join(expansion.not_implemented())}")
    return 0


def cmd_sweep(args) -> int:
    from orchestrator.sweep import run_sweep

    outcome = run_sweep(args.sweep, output=args.output, rerun_failed=args.rerun_failed, force=args.force,
                        wait_for_host=not args.no_wait, allow_concurrent=args.allow_concurrent)
    if outcome.storage_error:
        print(f"error: {outcome.storage_error}; free space (or restore the folder), then rerun the same command "
              "to resume", file=sys.stderr)
    elif outcome.interrupted:
        print(f"interrupted; rerun the same command to resume ({outcome.campaign.root})", file=sys.stderr)
    elif outcome.cancelled:
        print(f"cancelled; rerun the same command to resume ({outcome.campaign.root})", file=sys.stderr)
    elif outcome.submitted_only:
        if outcome.scheduler_down:
            print(f"error: {outcome.scheduler_down}", file=sys.stderr)
        if outcome.submitted < outcome.ran:
            print(f"error: {outcome.ran - outcome.submitted} of {outcome.ran} cell(s) were not submitted "
                  f"(`benchmark-tracker status -v {outcome.campaign.root}` says why; rerun the same command to "
                  "submit them)", file=sys.stderr)
        if outcome.submitted:
            print(f"submitted {outcome.submitted} cell(s); follow with `benchmark-tracker wait "
                  f"{outcome.campaign.root}`, then `benchmark-tracker collect {outcome.campaign.root}`")
    elif outcome.ran:
        from orchestrator.collect import collect

        collected = collect(outcome.campaign.root)
        print(f"results: {outcome.campaign.root / 'results.csv'} ({len(collected.results)} cells)")
    return outcome.exit_code


def cmd_collect(args) -> int:
    from orchestrator.collect import collect

    collected = collect(Path(args.campaign), pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity)
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
    statuses = {}  # read once, shared by the refresh and the counts
    _, cells = follow.refresh(campaign, statuses)
    for node_type, counts in sorted(follow.counts_by_node_type(campaign, cells, statuses).items()):
        parts = ", ".join(f"{counts[s]} {s}" for s in ("pending", "submitted", "running", "done", "failed")
                          if counts[s])
        print(f"{node_type}: {parts}")
    if args.verbose:
        for cell in cells:
            status = campaign.status(cell.id)
            if status["state"] == "failed":
                print(f"{cell.id} {cell.label}: {status.get('reason')}")
    from orchestrator.lifecycle import campaign_exit_code

    return campaign_exit_code(campaign, cells)  # 1 when any cell failed: scripts see it


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
    from jobs import backends
    from jobs.catalog import TESTS, built_params

    if not args.no_build:
        if not backends.is_installed(args.backend):
            raise UserError(f"backend {args.backend} is not installed", [backends.get_backend(args.backend).install])
        backends.select_backend(args.backend)  # before built_params imports Keras

    tests = []
    for t in TESTS.values():
        built = built_params(t) if t.implemented and not args.no_build else (None, None)
        tests.append({"number": t.number, "name": t.name, "title": t.title, "task": t.task,
                      "implemented": t.implemented, "phases": list(t.phases()),
                      "reference_total_params": t.total_params, "reference_trainable_params": t.trainable_params,
                      "total_params": built[0], "trainable_params": built[1],
                      "subtests": [{"id": s.id, "phase": s.phase, "batch": s.batch,
                                    "input_shape": list(s.input_shape), "output_shape": list(s.output_shape)}
                                   for s in t.subtests]})
    if args.json:
        print(json.dumps(tests, indent=2))
        return 0

    def count(value):
        return f"{value:,}" if value is not None else "-"

    rows = [{"id": s["id"], "test": t["name"], "phase": s["phase"], "batch": s["batch"],
             "input": "x".join(map(str, s["input_shape"])), "output": "x".join(map(str, s["output_shape"])),
             "params (built)": count(t["total_params"]), "trainable (built)": count(t["trainable_params"]),
             "trainable (original)": count(t["reference_trainable_params"]),
             "implemented": "yes" if t["implemented"] else "no"}
            for t in tests for s in t["subtests"]]
    print(_table(rows, list(rows[0])))
    inference = sum(1 for t in tests for s in t["subtests"] if s["phase"] == "inference")
    print(f"\n{len(tests)} tests, {inference} inference and {len(rows) - inference} training sub-tests"
          + ("" if not args.no_build else "; parameter counts not built (--no-build)"))
    return 0


def cmd_report(args) -> int:
    from orchestrator.report import make_report

    report = make_report(args.campaign, Path(args.out) if args.out else None, include_pue=args.include_pue)
    print(f"report: {report.html}")
    print(f"tables: {len(report.tables)} files in {report.html.parent / 'tables'}; "
          f"figures: {len(report.figures)} files in {report.html.parent / 'figures'}")
    return 0


def cmd_compare(args) -> int:
    from orchestrator.compare import compare, to_markdown
    from orchestrator.results import load_campaign

    if args.node_types:
        if args.b is not None:
            raise UserError("give one campaign with --node-types, or two campaigns A B")
        a, b = load_campaign(args.a, args.node_types[0]), load_campaign(args.a, args.node_types[1])
    elif args.b is None:
        raise UserError("compare needs two campaigns (A B), or one campaign and --node-types X Y")
    else:
        a, b = load_campaign(args.a), load_campaign(args.b)
    table = compare(a, b, metrics=args.metrics) if args.metrics else compare(a, b)
    text = to_markdown(table, a.name, b.name)
    print(text, end="")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


def cmd_baseline(args) -> int:
    from orchestrator.regress import DEFAULT_METRICS, promote

    added = promote(args.campaign, Path(args.references), metrics=args.metrics or DEFAULT_METRICS,
                    band=args.band, unbounded_good=args.unbounded_good)
    for (node_type, test, phase, metric), (value, lower, upper) in sorted(added.items()):
        print(f"{node_type} {test} {phase} {metric}: {value:.4g} (lower {lower}, upper {upper})")
    print(f"wrote {len(added)} reference(s) to {args.references}")
    return 0


def cmd_nightly(args) -> int:
    from orchestrator.regress import DEFAULT_METRICS, nightly

    verdict, junit, summary = nightly(args.sweep, Path(args.references), Path(args.output),
                                      metrics=args.metrics or DEFAULT_METRICS,
                                      campaign=Path(args.campaign) if args.campaign else None)
    print(summary.read_text(encoding="utf-8"), end="")
    print(f"wrote {junit} and {summary}")
    return verdict.exit_code


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
    p.add_argument("--no-wait", action="store_true",
                   help="refuse (exit 2) instead of waiting when this host is measuring another campaign")
    p.add_argument("--allow-concurrent", action="store_true",
                   help="unmetered debugging: run beside another campaign on this host; its cells are marked "
                        "shared-node")
    p.set_defaults(func=cmd_sweep)

    p = verbs.add_parser("collect", help="build results.csv/.parquet and summary.csv for a campaign")
    p.add_argument("campaign", help="a campaign folder, e.g. results/smoke")
    p.add_argument("--pue", type=float, help="recompute CO2 with this PUE (raw energy is unchanged)")
    p.add_argument("--carbon-intensity", type=float, metavar="G_PER_KWH",
                   help="recompute CO2 with this carbon intensity")
    p.set_defaults(func=cmd_collect)

    p = verbs.add_parser("status", help="count a campaign's cells by state and node type (exit 1 if any failed)")
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

    p = verbs.add_parser("catalog", help="list the tests and sub-tests, with parameter counts of the built models")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-build", action="store_true", help="skip building the models (fast; no built counts)")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default="tensorflow",
                   help="the Keras backend that builds and counts the models (default: tensorflow)")
    p.set_defaults(func=cmd_catalog)

    p = verbs.add_parser("report", help="HTML report, paper-style tables and figures for a campaign")
    p.add_argument("campaign", help="a campaign folder, or a built-in reference (chifflet-2022)")
    p.add_argument("--out", help="output folder (default: <campaign>/report)")
    p.add_argument("--include-pue", action="store_true", help="EC in Tables 2/3 includes PUE, as the paper's")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("compare", help="ratios B/A of time, energy and J/sample with CIs and Welch's test")
    p.add_argument("a", help="campaign A (folder, chifflet-2022, or FOLDER@node_type)")
    p.add_argument("b", nargs="?", help="campaign B (same forms)")
    p.add_argument("--node-types", nargs=2, metavar=("X", "Y"), help="compare two node types of campaign A")
    p.add_argument("--metrics", nargs="+", help="metrics (default: duration_s throughput energy_j "
                                                 "energy_per_sample_j)")
    p.add_argument("--csv", help="also write the comparison as CSV")
    p.add_argument("--markdown", help="also write the comparison as Markdown")
    p.set_defaults(func=cmd_compare)

    p = verbs.add_parser("baseline", help="promote a campaign's means to nightly references")
    p.add_argument("campaign")
    p.add_argument("--references", default="references/nightly.yaml", help="file to update (merged)")
    p.add_argument("--metrics", nargs="+", help="metrics (default: throughput energy_per_sample_j)")
    p.add_argument("--band", type=float, help="relative tolerance either side (default per metric, "
                                              "never tighter than 2 run-to-run SDs)")
    p.add_argument("--unbounded-good", action="store_true", help="no bound on the good side (no improvement flag)")
    p.set_defaults(func=cmd_baseline)

    p = verbs.add_parser("nightly", help="run the nightly sweep, judge it; exit 0 ok, 1 regression, 2 broken")
    p.add_argument("--sweep", default="nightly", help="sweep file or name (default: sweeps/nightly.yaml)")
    p.add_argument("--references", default="references/nightly.yaml")
    p.add_argument("--output", default="results/nightly", help="runs, history/ and the latest verdict go here")
    p.add_argument("--campaign", help="judge this collected campaign instead of running the sweep")
    p.add_argument("--metrics", nargs="+", help="metrics judged (default: throughput energy_per_sample_j)")
    p.set_defaults(func=cmd_nightly)
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, a folder deleted under us: a clear line, not a traceback
        from orchestrator.lifecycle import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP to a sweep, outside a cell
        from orchestrator.lifecycle import interrupt_exit_code

        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return interrupt_exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
