"""``lopt train``: meta-train a learned optimizer (default: the built-in ``quickstart`` config).

An existing run is never overwritten by default: ``--resume`` continues it from its own saved
``config.json`` (``--set`` may change only the settings listed in
:data:`lopt.meta.run_directory.RESUME_SAFE_KEYS`), ``--overwrite`` moves it into a
``previous-<time>/`` sub-folder and starts afresh. See docs/meta_training.md, "Output
directories, resume and safety".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import lopt
from lopt.cli.compilation_cache import enable_compilation_cache
from lopt.cli.host_devices import use_host_cores
from lopt.meta import distributed
from lopt.meta.interrupts import TrainingInterrupted, how_to_continue
from lopt.meta.report import finish_run
from lopt.meta.run_directory import clear_for_new_run, latest_checkpoint_step, resume_config
from lopt.meta.trainer import MetaTrainer, check_resumable
from lopt.output_dir import DirectoryLock

DEFAULT_CONFIG = "quickstart"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="meta-train a learned optimizer",
        description="Meta-train a learned optimizer, then compare it with Adam on fresh tasks. "
                    "With no arguments runs the built-in 'quickstart' config.")
    parser.add_argument("config", nargs="?", default=None,
                        help="a preset (quickstart, canonical), a TOML or JSON config file, or a run directory "
                             f"(default {DEFAULT_CONFIG}; with --resume: the run's own config.json)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, repeatable (e.g. --set estimator.num_tasks=32); with "
                             "--resume only trainer.outer_steps, evaluation/checkpoint frequency and final_eval")
    parser.add_argument("--out", help="output directory (default runs/train-<name>-<time>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its latest checkpoint, with its saved config")
    mode.add_argument("--overwrite", action="store_true",
                      help="if --out holds a run, move it into --out/previous-<time>/ and start afresh")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _load(args: argparse.Namespace):
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out DIR (the directory of the run to continue).")
        return resume_config(args.out, args.config, args.set)
    return lopt.meta.load_config(args.config or DEFAULT_CONFIG, args.set), {}


def _announce(args: argparse.Namespace, config, out: str, changes: dict) -> None:
    """Moves a run aside (``--overwrite``) or says where a resume starts; refuses to clobber a run."""
    if args.resume:
        check_resumable(config, out)
        step = latest_checkpoint_step(out, config)
        start = (f"resuming from the checkpoint of step {step}" if step is not None else
                 "no checkpoint yet: restarting from step 0 with the saved config")
        print(f"{out}: {start}" + "".join(f"; {k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changes.items()))
        return
    moved = clear_for_new_run(out, overwrite=args.overwrite, config=config)
    if moved is not None:
        print(f"moved the previous run in {out} to {moved}")


def _train(args: argparse.Namespace, config, out: str) -> dict | int:
    """Meta-trains and compares; on Ctrl-C or SIGTERM, the exit status (after saying how to resume).

    The trainer checkpoints the last completed outer step before it stops
    (:class:`lopt.meta.interrupts.TrainingInterrupted`); a second Ctrl-C stops at once.
    """
    print(f"meta-training '{config.name}': {config.lopt.name} learned optimizer, {config.estimator.kind} with "
          f"{config.estimator.num_tasks} tasks, unroll {config.estimator.unroll_length}, "
          f"{config.trainer.outer_steps} outer steps -> {out}")
    trainer = MetaTrainer(config, out, progress=not args.no_progress)
    for note in trainer.notes:
        print(f"note: {note}")
    try:
        result = trainer.run(resume=args.resume)
        print(f"meta-training done: {result['step']} outer steps in {result['seconds']:.0f}s "
              f"({result['inner_steps_per_s']:,.0f} inner steps/s incl. compilation)")
        if config.final_eval.enabled:
            print(f"comparing with Adam on {config.final_eval.seeds} fresh tasks, {config.final_eval.steps} steps ...")
        return finish_run(out, config, trainer.setup, result)
    except KeyboardInterrupt as err:
        step = latest_checkpoint_step(out, config)
        saved = "a checkpoint" if config.trainer.full_checkpoints else "the warm start"
        if isinstance(err, TrainingInterrupted):
            kept = f"saved {saved} of outer step {err.step} (the last one completed)"
        elif not config.trainer.full_checkpoints:
            kept = "the warm start of the last save point is kept"
        else:
            kept = f"the checkpoint of step {step} is kept" if step is not None else "no checkpoint was written yet"
        how = how_to_continue(out, full_checkpoints=config.trainer.full_checkpoints)
        print(f"\ninterrupted: {kept}; continue with {how}.", file=sys.stderr)
        return getattr(err, "exit_status", 130)


def run(args: argparse.Namespace) -> int:
    use_host_cores()  # before JAX starts: on a CPU the tasks split over the cores (lopt.cli.host_devices)
    if distributed.initialize_from_env() is not None and args.out:  # LOPT_COORDINATOR: one of several processes
        args.out = distributed.process_out_dir(args.out)  # process k > 0 keeps its files in <out>.process-<k>
    config, changes = _load(args)
    if args.show_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    out = args.out or os.path.join("runs", f"train-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    enable_compilation_cache()  # a resumed, repeated or continued run loads its bucket programs
    try:
        with DirectoryLock(out):  # held from the first check to the last file written
            _announce(args, config, out, changes)
            comparison = _train(args, config, out)
    except FileNotFoundError:
        raise
    except OSError as err:  # disk full, permissions, --out is a file: one line, and how to go on
        where = f" ({err.filename})" if err.filename else ""
        then = (f", then continue with `lopt train --out {out} --resume`"
                if os.path.isfile(os.path.join(out, "config.json")) else "")
        raise ValueError(f"{err.strerror or err}{where}; fix that (free space, permissions or --out){then}.") from None
    if isinstance(comparison, int):  # interrupted
        return comparison
    for row in comparison.get("rows", []):
        print(f"  {row['optimizer']:<24} train loss (last {comparison['tail']}): {row['mean_last_train_loss']:.4f}"
              f"   test acc {row['final_test_accuracy']:.4f}")
    print(f"wrote {out}/: theta.safetensors, config.json, config_history.jsonl, metrics.jsonl, eval.jsonl, "
          f"meta_training.png, {'learning_curves.png, comparison.json, ' if comparison else ''}summary.md, "
          "checkpoints/")
    return 0
