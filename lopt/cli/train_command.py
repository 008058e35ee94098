"""``lopt train``: meta-train a learned optimizer (default: the built-in ``quickstart`` config)."""

from __future__ import annotations

import argparse
import json
import os
import time

import lopt
from lopt.meta.report import finish_run
from lopt.meta.trainer import MetaTrainer


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="meta-train a learned optimizer",
        description="Meta-train a learned optimizer, then compare it with Adam on fresh tasks. "
                    "With no arguments runs the built-in 'quickstart' config.")
    parser.add_argument("config", nargs="?", default="quickstart",
                        help="a preset (quickstart, canonical) or a TOML file (default quickstart)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, repeatable (e.g. --set estimator.num_tasks=32)")
    parser.add_argument("--out", help="output directory (default runs/train-<name>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = lopt.meta.load_config(args.config, args.set)
    if args.show_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if args.resume and not args.out:
        raise ValueError("--resume needs --out DIR (the directory of the run to continue).")
    out = args.out or os.path.join("runs", f"train-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"meta-training '{config.name}': {config.lopt.name} learned optimizer, {config.estimator.kind} with "
          f"{config.estimator.num_tasks} tasks, unroll {config.estimator.unroll_length}, "
          f"{config.trainer.outer_steps} outer steps -> {out}")
    trainer = MetaTrainer(config, out, progress=not args.no_progress)
    for note in trainer.notes:
        print(f"note: {note}")
    result = trainer.run(resume=args.resume)
    print(f"meta-training done: {result['step']} outer steps in {result['seconds']:.0f}s "
          f"({result['inner_steps_per_s']:,.0f} inner steps/s incl. compilation)")
    if config.final_eval.enabled:
        print(f"comparing with Adam on {config.final_eval.seeds} fresh tasks, {config.final_eval.steps} steps ...")
    comparison = finish_run(out, config, trainer.setup, result)
    for row in comparison.get("rows", []):
        print(f"  {row['optimizer']:<24} train loss (last {comparison['tail']}): {row['mean_last_train_loss']:.4f}"
              f"   test acc {row['final_test_accuracy']:.4f}")
    print(f"wrote {out}/: theta.safetensors, config.json, metrics.jsonl, eval.jsonl, meta_training.png, "
          f"{'learning_curves.png, comparison.json, ' if comparison else ''}summary.md, checkpoints/")
    return 0
