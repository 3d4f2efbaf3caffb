"""benchmark-tracker: measure how much time and energy each AI Benchmark model costs on each kind of node.

A sweep file (docs/sweep-format.md) expands to cells; `sweep` runs them, `collect`, `report` and
`compare` read the results. `benchmark-tracker VERB --help` describes each verb.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from orchestrator import __version__
from orchestrator.errors import UserError
from orchestrator.names import resolve_campaign


def _table(rows: list, columns: list) -> str:
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _fit_window(params: dict) -> str:
    """A fit cell's window is its stop rules: `fit <= 30 ep, 60 J, 50 %`."""
    budget = (params.get("budget") or {}).get("joules")
    parts = [f"fit <= {params['fit']['epochs']} ep"] + ([f"{budget:g} J"] if budget else []) + (
        [f"{params['train_fraction']:.0%}"] if params.get("train_fraction", 1.0) != 1.0 else [])
    return ", ".join(parts)


EXIT_CODES = """exit codes:
  0    all done
  1    some cells failed (or, for nightly, a regression)
  2    bad input: an invalid sweep, a missing file, an unusable launcher; nothing was run or written
  3    wait: gave up after --timeout
  130  interrupted (Ctrl-C); rerun the same command to resume"""


class _Parser(argparse.ArgumentParser):
    """argparse, with did-you-mean for a mistyped verb or choice (exit 2, like every bad input)."""

    def error(self, message):
        import difflib
        import re

        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=3)
            if close:
                message += f"; did you mean {' or '.join(map(repr, close))}?"
        super().error(message)


def _estimate_lines(spec, cells: list) -> list:
    from orchestrator.estimate import GUESS_ITERATION_S, GUESS_START_S, duration, estimate

    found = estimate(spec, cells)
    lines = ["", "estimate (one cell at a time per node type; queue waits not included):"]
    for nt, (total, guessed) in sorted(found.per_node_type().items()):
        lines.append(f"  {nt}: {duration(total)} for {sum(1 for c in found.cells if c.cell.node_type == nt)} "
                     f"cells, of which {duration(guessed)} guessed; idle baselines "
                     f"{duration(found.idle_s.get(nt, 0))}, cooldowns {duration(found.cooldown_s.get(nt, 0))}"
                     + (f"; plus up to {duration(found.temperature_wait_max_s[nt])} waiting for temperatures "
                        f"(cooldown.max_s {spec.sweep.cooldown.max_s:g} s a cell, not in the total)"
                        if nt in found.temperature_wait_max_s else ""))
    lines.append(f"  total: {duration(found.total_s)} ({duration(found.guessed_s)} of it guessed; node types "
                 "under a scheduler may run side by side)")
    reps = spec.sweep.matrix.repetitions
    if not isinstance(reps, int):
        low = estimate(spec, [c for c in cells if c.repetition < reps.min])
        lines.append(f"  adaptive repetitions: {duration(low.total_s)} if {reps.min} repetitions suffice, up to "
                     f"{duration(found.total_s)} with all {reps.max}")
    lines.append(f"  guesses: {GUESS_START_S:g} s per cell to start and build the model, {GUESS_ITERATION_S:g} s "
                 "per iteration for warm-ups and windows given in iterations; windows in duration_s, idle "
                 f"baselines and cooldowns are as requested; each cell is stopped at timeout_s "
                 f"({spec.sweep.timeout_s:g} s)")
    return lines


def _estimate_json(spec, cells: list) -> dict:
    from orchestrator.estimate import GUESS_ITERATION_S, GUESS_START_S, estimate

    found = estimate(spec, cells)
    return {"total_s": found.total_s, "guessed_s": found.guessed_s,
            "guesses": {"start_s_per_cell": GUESS_START_S, "iteration_s": GUESS_ITERATION_S},
            "node_types": {nt: {"total_s": t, "guessed_s": g, "idle_s": found.idle_s.get(nt, 0.0),
                                "cooldown_s": found.cooldown_s.get(nt, 0.0),
                                "temperature_wait_max_s": found.temperature_wait_max_s.get(nt)}
                           for nt, (t, g) in found.per_node_type().items()},
            "cells": {c.cell.id: {"start_s": c.start_s, "warmup_s": c.warmup_s, "window_s": c.window_s,
                                  "window_guessed": c.window_guessed, "total_s": c.total_s} for c in found.cells}}


def cmd_expand(args) -> int:
    from orchestrator.matrix import expand
    from orchestrator.spec import load_sweep

    spec = load_sweep(args.sweep, set_overrides=args.set, only=args.only)
    expansion = expand(spec)
    rows = [{"id": c.id, **c.params, "input_shape": "x".join(map(str, c.params["input_shape"])),
             "window": f"{c.duration_s:g} s" if c.duration_s is not None else (
                 f"{c.iterations} it" if c.iterations is not None else _fit_window(c.params)),
             "implemented": c.implemented} for c in expansion.cells]
    if args.json:
        report = {"sweep": spec.sweep.name, "cells": [{"id": c.id, "implemented": c.implemented,
                                                      "params": c.params} for c in expansion.cells],
                  "not_implemented": expansion.not_implemented(), "notes": expansion.notes}
        if args.estimate:
            report["estimate"] = _estimate_json(spec, expansion.cells)
        print(json.dumps(report, indent=2))
        return 0
    columns = ["id", "test", "subtest", "phase", "node_type", "backend", "repetition", "batch_size", "input_shape",
               "precision", "execution", "window", "implemented"]
    if args.estimate:
        from orchestrator.estimate import duration, estimate

        for row, cell in zip(rows, estimate(spec, expansion.cells).cells):
            row["estimate"] = f"{duration(cell.total_s)} ({duration(cell.guessed_s)} guessed)"
        columns.append("estimate")
    print(_table(rows, columns))
    print(f"\n{len(rows)} cells from {spec.path}")
    reps = spec.sweep.matrix.repetitions
    if not isinstance(reps, int):
        print(f"repetitions: adaptive, {reps.min} to {reps.max} per group, until the 95 % CI of {reps.metric} "
              f"is within ±{reps.target_ci:.1%} of the mean; cells not needed are skipped")
    for note in expansion.notes:
        print(f"note: {note}")
    if expansion.not_implemented():
        print(f"not implemented yet (a sweep with them is refused): {', '.join(expansion.not_implemented())}")
    if args.estimate:
        print("\n".join(_estimate_lines(spec, expansion.cells)))
    return 0


def cmd_sweep(args) -> int:
    from orchestrator.sweep import run_sweep

    outcome = run_sweep(args.sweep, output=args.output, rerun_failed=args.rerun_failed, force=args.force,
                        wait_for_host=not args.no_wait, allow_concurrent=args.allow_concurrent,
                        set_overrides=args.set, only=args.only)
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
        print(sweep_summary(collected, outcome.campaign.root))
    return outcome.exit_code


def sweep_summary(collected, root) -> str:
    """The sweep's closing lines: cells by state, the notes that qualify the numbers, the command to run next."""
    states = Counter(collected.results["state"]) if len(collected.results) else Counter()
    lines = ["summary: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no cells")]
    lines += [f"note: {note}" for note in collected.notes]
    lines += [f"problem: {problem}" for problem in collected.problems]
    if getattr(collected, "scaling", None) is not None:  # scale (#15): a scaled campaign's scaling table
        from orchestrator.scaling import SCALING_FILE, format_table

        lines += [f"scaling ({root / SCALING_FILE}):", format_table(collected.scaling)]
    lines.append(f"next: benchmark-tracker report {root}")
    return "\n".join(lines)


def cmd_collect(args) -> int:
    from orchestrator.collect import collect

    root = resolve_campaign(args.campaign)
    collected = collect(root, pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity,
                        include_invalid=args.include_invalid)
    states = Counter(collected.results["state"]) if len(collected.results) else Counter()
    print(f"{root}: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no cells"))
    if collected.factors:
        f = collected.factors
        print(f"factors: PUE {f['pue']}, carbon intensity {f['carbon_intensity_g_per_kwh']} g/kWh "
              f"({f['factor_source']})")
    for problem in collected.problems:
        print(f"problem: {problem}", file=sys.stderr)
    for note in collected.notes:
        print(f"note: {note}")
    if len(collected.summary):
        columns = [c for c in ("test", "subtest", "phase", "node_type", "n", "throughput_mean",
                               "energy_per_sample_j_mean", "energy_kind") if c in collected.summary]
        print(collected.summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote results.csv, results.parquet, summary.csv in {root}")
    problems = list(collected.problems)
    if args.traces:  # evidence (#14): every done cell's trace.parquet in one table
        from orchestrator.traces import export_traces

        exported = export_traces(root)
        for problem in exported["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
        problems += exported["problems"]
        print(f"wrote {exported['path'].name}: {exported['rows']} samples from {exported['cells']} cell(s)")
    print(f"next: benchmark-tracker report {root}")
    return 1 if problems else 0


def cmd_status(args) -> int:
    from orchestrator import follow
    from orchestrator.store import Campaign

    campaign = Campaign(Path(resolve_campaign(args.campaign)))
    if getattr(args, "json", False) or args.verbose:
        from orchestrator.overview import campaign_overview, overview_lines

        from orchestrator.lifecycle import campaign_exit_code

        _, cells = follow.refresh(campaign)
        overview = campaign_overview(campaign.root)
        print(json.dumps(overview, indent=2) if args.json else "\n".join(overview_lines(overview, verbose=True)))
        return campaign_exit_code(campaign, cells)  # 1 when any cell failed, as without -v
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

    return follow.wait(Campaign(Path(resolve_campaign(args.campaign))), poll_s=args.poll, timeout_s=args.timeout)


def cmd_cancel(args) -> int:
    from orchestrator import follow
    from orchestrator.store import Campaign

    count = follow.cancel(Campaign(Path(resolve_campaign(args.campaign))))
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
                      "family": t.family, "reported_accuracy": t.reported,
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
    fit = sum(1 for t in tests for s in t["subtests"] if s["phase"] == "fit")
    print(f"\n{len(tests)} tests, {inference} inference and {len(rows) - inference - fit} training sub-tests"
          + (f", {fit} shallow fit sub-tests" if fit else "")
          + ("" if not args.no_build else "; parameter counts not built (--no-build)"))
    return 0


def cmd_report(args) -> int:
    from orchestrator.report import make_report

    campaign = resolve_campaign(args.campaign, allow_reference=True)
    report = make_report(campaign, Path(args.out) if args.out else None, include_pue=args.include_pue,
                         tests=args.tests, phases=args.phases, node_types=args.node_types,
                         work_samples=args.work_samples, include_invalid=args.include_invalid)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    for line in report.factors:
        print(line)
    print(f"report: {report.html}")
    print(f"tables: {len(report.tables)} files in {report.html.parent / 'tables'}; "
          f"figures: {len(report.figures)} files in {report.html.parent / 'figures'}")
    return 0


def cmd_compare(args) -> int:
    from orchestrator.compare import compare, to_markdown
    from orchestrator.results import load_campaign

    def load(ref, node_type=None):
        return load_campaign(resolve_campaign(ref, allow_reference=True, allow_node_type=True), node_type,
                             include_invalid=args.include_invalid)

    if args.node_types:
        if args.b is not None:
            raise UserError("give one campaign with --node-types, or two campaigns A B")
        a, b = load(args.a, args.node_types[0]), load(args.a, args.node_types[1])
    elif args.b is None:
        raise UserError("compare needs two campaigns (A B), or one campaign and --node-types X Y")
    else:
        a, b = load(args.a), load(args.b)
    table = compare(a, b, metrics=args.metrics or DEFAULT_COMPARE_METRICS(), allow_different=args.allow_different or ())
    text = to_markdown(table, a, b, include_invalid=args.include_invalid)
    print(text, end="")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


def DEFAULT_COMPARE_METRICS():  # noqa: N802 - a constant, imported late (pandas/scipy)
    from orchestrator.compare import DEFAULT_METRICS

    return DEFAULT_METRICS


def cmd_baseline(args) -> int:
    from orchestrator.regress import DEFAULT_METRICS, promote

    added = promote(resolve_campaign(args.campaign), Path(args.references), metrics=args.metrics or DEFAULT_METRICS,
                    band=args.band, unbounded_good=args.unbounded_good)
    for (node_type, test, phase, metric), (value, lower, upper) in sorted(added.items()):
        print(f"{node_type} {test} {phase} {metric}: {value:.4g} (lower {lower}, upper {upper})")
    print(f"wrote {len(added)} reference(s) to {args.references}")
    return 0


def cmd_nightly(args) -> int:
    from orchestrator.regress import DEFAULT_METRICS, nightly

    verdict, junit, summary = nightly(args.sweep, Path(args.references), Path(args.output),
                                      metrics=args.metrics or DEFAULT_METRICS,
                                      campaign=Path(resolve_campaign(args.campaign)) if args.campaign else None,
                                      include_invalid=args.include_invalid)
    print(summary.read_text(encoding="utf-8"), end="")
    print(f"wrote {junit} and {summary}")
    return verdict.exit_code


def cmd_dataset(args) -> int:
    from orchestrator.dataset import write_dataset

    counts = write_dataset(args.name, Path(args.dir))
    print(f"wrote {sum(counts.values())} images in {len(counts)} class folders under {args.dir}")
    return 0


def _sweep_changes(p) -> None:
    """--set and --only, for the verbs that load a sweep: validated exactly like the file."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change the sweep: a dotted key path and a YAML value, e.g. matrix.repetitions=3, "
                        "defaults.duration_s=5, matrix.tests=[vgg_16]; repeatable")
    p.add_argument("--only", nargs="+", action="extend", metavar="AXIS=VALUE[,VALUE]",
                   help="keep only the cells with these axis values, e.g. test=vgg_16,mobilenet_v2 "
                        "phase=training (axes: test, phase, node_type, subtest)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="benchmark-tracker", description=__doc__, epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser)

    p = verbs.add_parser("expand", help="print the cells a sweep expands to (validates it; runs nothing)",
                         description="Validate a sweep and print its cells, with --estimate the expected "
                                     "duration. Runs and writes nothing.",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="a sweep file, or a bare name looked up in sweeps/")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--estimate", action="store_true",
                   help="also the campaign's expected duration, per node type and in total, saying what is guessed")
    _sweep_changes(p)
    p.set_defaults(func=cmd_expand)

    p = verbs.add_parser("sweep", help="run a sweep's cells (skips done ones), then collect",
                         description="Validate a sweep, write its campaign folder (<output>/<name>/), run its "
                                     "cells and collect their results. Rerunning resumes: done cells are "
                                     "skipped. With --set/--only the campaign freezes the effective sweep.",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="a sweep file, or a bare name looked up in sweeps/")
    _sweep_changes(p)
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
    p.add_argument("--pue", type=float, help="recompute CO2 with this PUE (>= 1; raw energy is unchanged)")
    p.add_argument("--carbon-intensity", type=float, metavar="G_PER_KWH",
                   help="recompute CO2 with this carbon intensity (>= 0); both are kept for later collects")
    p.add_argument("--include-invalid", action="store_true",
                   help="keep cells whose energy reading is marked invalid in summary.csv")
    p.add_argument("--traces", action="store_true",
                   help="also write traces.parquet: every done cell's power trace, with its window edges")
    p.set_defaults(func=cmd_collect)

    p = verbs.add_parser("status", help="count a campaign's cells by state and node type (exit 1 if any failed)")
    p.add_argument("campaign")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list failed cells with their reasons, and the meter notes (why a number is an estimate)")
    p.add_argument("--json", action="store_true", help="machine-readable: counts, failures, notes, problems")
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

    p = verbs.add_parser("dataset", help="write a dataset bundled with an installed package as an image folder")
    p.add_argument("name", choices=["digits"], help="digits: scikit-learn's 1,797 8x8 handwritten digits")
    p.add_argument("dir", help="output folder (one sub-folder per class)")
    p.set_defaults(func=cmd_dataset)

    p = verbs.add_parser("report", help="HTML report, paper-style tables and figures for a campaign")
    p.add_argument("campaign", help="a campaign folder, or a built-in reference (chifflet-2022)")
    p.add_argument("--out", help="output folder (default: <campaign>/report)")
    p.add_argument("--include-pue", action="store_true",
                   help="EC in Tables 2/3 and Fig. 2 include PUE, as the paper's")
    p.add_argument("--work-samples", type=_positive_int, metavar="N",
                   help="Tables 2/3 and Figs 2/3 per N samples of work (default: each sub-test's nominal work, "
                        "22 iterations x its batch)")
    p.add_argument("--tests", nargs="+", metavar="TEST", help="only these tests (e.g. the paper's 7)")
    p.add_argument("--phases", nargs="+", choices=("inference", "training"), help="only these phases")
    p.add_argument("--node-types", nargs="+", metavar="NODE_TYPE", help="only these node types")
    p.add_argument("--include-invalid", action="store_true", help="keep cells whose energy is marked invalid")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("compare", help="ratios B/A of time, energy and J/sample with CIs and Welch's test")
    p.add_argument("a", help="campaign A (folder, chifflet-2022, or FOLDER@node_type)")
    p.add_argument("b", nargs="?", help="campaign B (same forms)")
    p.add_argument("--node-types", nargs=2, metavar=("X", "Y"), help="compare two node types of campaign A")
    p.add_argument("--metrics", nargs="+", help="metrics (default: duration_s throughput energy_j "
                                                 "energy_per_sample_j)")
    p.add_argument("--csv", help="also write the comparison as CSV")
    p.add_argument("--markdown", help="also write the comparison as Markdown")
    p.add_argument("--allow-different", nargs="+", metavar="KEY", default=[],
                   help="compare rows whose workload differs in these keys (batch_size input_shape precision "
                        "execution backend); otherwise they are `not comparable`")
    p.add_argument("--include-invalid", action="store_true", help="keep cells whose energy is marked invalid")
    p.set_defaults(func=cmd_compare)

    p = verbs.add_parser("baseline", help="promote a campaign's means to nightly references")
    p.add_argument("campaign")
    p.add_argument("--references", default="references/nightly.yaml", help="file to update (merged)")
    p.add_argument("--metrics", nargs="+", help="metrics (default: throughput energy_per_sample_j)")
    p.add_argument("--band", type=float, help="relative tolerance either side, written as given (refused when "
                                              "tighter than 2 run-to-run SDs); default per metric, widened to 2 SDs")
    p.add_argument("--unbounded-good", action="store_true", help="no bound on the good side (no improvement flag)")
    p.set_defaults(func=cmd_baseline)

    p = verbs.add_parser("nightly", help="run the nightly sweep, judge it; exit 0 ok, 1 regression, 2 broken")
    p.add_argument("--sweep", default="nightly", help="sweep file or name (default: sweeps/nightly.yaml)")
    p.add_argument("--references", default="references/nightly.yaml")
    p.add_argument("--output", default="results/nightly", help="runs, history/ and the latest verdict go here")
    p.add_argument("--campaign", help="judge this collected campaign instead of running the sweep")
    p.add_argument("--metrics", nargs="+", help="metrics judged (default: throughput energy_per_sample_j)")
    p.add_argument("--include-invalid", action="store_true", help="judge cells whose energy is marked invalid")
    p.set_defaults(func=cmd_nightly)

    from grid5000.calibrate import add_parser as add_calibrate  # calibrate (#14): software vs wattmeter

    add_calibrate(verbs)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def main(argv: list | None = None) -> int:
    # TensorFlow's C++ start-up lines (oneDNN, cuda factories, CPU feature guard) stay out of the console and of
    # the jobs' logs (jobs inherit the environment); a user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `benchmark-tracker ... | head`: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not raise again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
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
