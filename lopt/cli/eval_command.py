"""``lopt eval``: evaluate optimizers on a suite against tuned baselines; write a report.

Examples::

    lopt eval adam --suite iid                          # Adam at its defaults vs tuned Adam
    lopt eval runs/train-quickstart-X/theta.safetensors --suite ood_width --baselines all
    lopt eval adam optax.lion --suite quick --out runs/eval-quick
    lopt eval --combine runs/eval-a runs/eval-b --out runs/eval-ab
    lopt eval --report runs/eval-a                      # re-draw the report of finished results
    lopt eval CKPT --baselines all --trials 10 --opt-list-trials 10   # the whole ladder
    lopt eval --rebuild-curves runs/eval-a              # (re)write runs/eval-a/curves from results.csv

Every run also lands in ``<out>/curves``, a curve dataset (:mod:`lopt.evaluate.curves`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from lopt.cli.compilation_cache import enable_compilation_cache
from lopt.evaluate import (
    baseline_names,
    combine,
    evaluate,
    make_suite,
    parse_baselines,
    resolve,
    suite_names,
)
from lopt.evaluate.analysis import format_speedup, summarize
from lopt.evaluate.report import write_report
from lopt.evaluate.results import load
from lopt.evaluate.runner import divisor_near
from lopt.evaluate.suites import suite_description

DEFAULT_BASELINES = "adam_global,adam_per_task"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="evaluate optimizers against tuned baselines on a suite of tasks",
        description="Train optimizers (baseline names, optax.<alias>, learned architectures, or theta "
                    "checkpoints) on a suite of tasks with several seeds, next to tuned baselines; write "
                    "results.csv and a markdown report with plots. Re-running resumes.")
    parser.add_argument("optimizers", nargs="*", metavar="NAME_OR_PATH",
                        help="optimizers to evaluate: adam, nadamw:learning_rate=3e-3, optax.lion, "
                             "learnable_adam, or a theta checkpoint (file or `lopt train` output directory)")
    parser.add_argument("--suite", default="iid", help=f"one of {', '.join(suite_names())} (default iid)")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES,
                        help=f"comma-separated tuned baselines, 'all' or 'none' (default {DEFAULT_BASELINES}; "
                             f"choices: {', '.join(baseline_names())})")
    parser.add_argument("--out", help="results directory (default runs/eval-<suite>-<optimizers>)")
    parser.add_argument("--label", help="name of the optimizer in tables and plots (one optimizer only)")
    parser.add_argument("--tasks", type=int, help="number of tasks (sweeps: points); default per suite")
    parser.add_argument("--steps", type=int, help="inner steps per run (default 500)")
    parser.add_argument("--seeds", type=int, help="seeds per run (default 3 for iid, 2 otherwise)")
    parser.add_argument("--eval-every", type=int, help="evaluate valid/test every N steps (default steps/20)")
    parser.add_argument("--trials", type=int, default=8, help="random-search trials of adam8p/nadamw (default 8)")
    parser.add_argument("--opt-list-trials", type=int, default=10,
                        help="K, the first opt_list settings tried by the opt_list baselines (default 10)")
    parser.add_argument("--baseline-steps-factor", type=int, default=4,
                        help="the Adam learning-rate grid runs this many times --steps, so speedups up to this "
                             "factor are measured (default 4; 1 = same steps, speedups capped at 1x)")
    parser.add_argument("--grid-size", type=int, default=15, help="points of the Adam learning-rate grid (default 15)")
    parser.add_argument("--tuning-tasks", type=int,
                        help="tuning tasks for *_global baselines (default: leave-one-out for iid, else 3)")
    parser.add_argument("--family", default="mlp", help="the training family: iid samples it; tuning tasks too")
    parser.add_argument("--full-size", action="store_true",
                        help="sample the family's full distribution (default caps sizes to run on a CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampled tasks and random searches (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument("--combine", nargs="+", metavar="DIR", help="merge results directories of one suite "
                        "into --out and report them together")
    parser.add_argument("--report", metavar="DIR", help="only (re)write the report of a results directory")
    parser.add_argument("--rebuild-curves", metavar="DIR", help="(re)build DIR/curves, the curve dataset, from "
                        "DIR/results.csv (skips runs already there)")
    parser.add_argument("--list", action="store_true", help="list suites and baselines and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _default_out(suite: str, labels: list[str]) -> str:
    name = "+".join(labels) if len(labels) <= 3 else f"{labels[0]}+{len(labels) - 1}-more"
    name = re.sub(r"[^A-Za-z0-9_.+@=-]+", "_", name)[:80]
    return os.path.join("runs", f"eval-{suite}-{name}")


def _print_summary(report_path) -> None:
    summary = summarize(load(os.path.dirname(report_path)))
    steps = summary.suite.num_steps
    if summary.comparisons:
        print(f"{'optimizer':<24} {'baseline':<18} {'win frac':>8} {'median norm. test loss':>24} "
              f"{'median speedup':>15}")
        for c in summary.comparisons:
            speed_text = format_speedup(c.median_speedup, steps, round(c.speedup_cap * steps))
            print(f"{c.candidate:<24} {c.baseline:<18} {c.win_fraction:>8.2f} "
                  f"{c.median_normalized_candidate:>11.3f} / {c.median_normalized_baseline:<10.3f} {speed_text:>15}")
    print(f"report: {report_path}")


def _list() -> int:
    print("suites:")
    for name in suite_names():
        print(f"  {name:<12} {suite_description(name)}")
    print("baselines:")
    for name in baseline_names():
        from lopt.evaluate import get_baseline

        print(f"  {name:<16} {get_baseline(name).description}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if args.rebuild_curves:
        from lopt.evaluate.curves import from_results

        added = from_results(args.rebuild_curves)
        print(f"added {added} runs to {os.path.join(args.rebuild_curves, 'curves')}")
        return 0
    if args.report:
        path = write_report(args.report)
        _print_summary(path)
        return 0
    if args.combine:
        if not args.out:
            raise ValueError("--combine needs --out DIR, the directory to write the merged results and report to.")
        if args.optimizers:
            raise ValueError("--combine merges finished results; evaluate optimizers in separate runs first.")
        out = combine(args.combine, args.out)
        path = write_report(out)
        _print_summary(path)
        return 0
    if not args.optimizers:
        raise ValueError("give at least one optimizer to evaluate, e.g. `lopt eval adam --suite iid` "
                         "(or --combine/--report/--list).")
    if args.label and len(args.optimizers) != 1:
        raise ValueError("--label names a single optimizer; evaluate several optimizers without it.")
    baselines = parse_baselines(args.baselines)
    suite = make_suite(args.suite, num_tasks=args.tasks, num_steps=args.steps, num_seeds=args.seeds,
                       eval_every=args.eval_every, seed=args.seed, family=args.family, full_size=args.full_size,
                       num_tuning_tasks=args.tuning_tasks, quick=args.quick)
    if args.baseline_steps_factor > 1 and args.eval_every is None and suite.num_steps % suite.eval_every:
        suite = make_suite(args.suite, num_tasks=args.tasks, num_steps=args.steps, num_seeds=args.seeds,
                           eval_every=divisor_near(suite.num_steps, suite.eval_every), seed=args.seed,
                           family=args.family, full_size=args.full_size, num_tuning_tasks=args.tuning_tasks,
                           quick=args.quick)
    candidates = [resolve(name, label=args.label) for name in args.optimizers]
    out = args.out or _default_out(suite.name, [c.label for c in candidates])
    print(f"suite {suite.name}: {len(suite.tasks)} tasks (+{len(suite.tuning_tasks)} tuning), {suite.num_steps} "
          f"steps, {suite.num_seeds} seeds; optimizers: {', '.join(c.label for c in candidates)}; baselines: "
          f"{', '.join(b.name for b in baselines) or 'none'} -> {out}")
    enable_compilation_cache()
    try:
        evaluate(suite, candidates, out, baselines=baselines, num_trials=args.trials, grid_size=args.grid_size,
                 search_seed=args.seed, opt_list_trials=args.opt_list_trials,
                 baseline_steps_factor=args.baseline_steps_factor, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are saved in {out}; run the same command again to resume.",
              file=sys.stderr)
        return 130
    path = write_report(out)
    _print_summary(path)
    return 0
