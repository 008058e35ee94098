"""``lopt run``: train one task with one baseline optimizer, save curves, summary and a plot."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import jax
import numpy as np

import lopt
from lopt.output_dir import DirectoryLock, claim
from lopt.plotting import plot_learning_curves

DEFAULT_TASK = "mlp"
FALLBACK_DATASET = "digits"
OUTPUTS = ("train_loss.csv", "eval.csv", "run.json", "learning_curve.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run", help="train a task with a baseline optimizer",
        description="Train one task with one optimizer; saves curves (CSV/JSON), a summary and a PNG plot.")
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task family (default {DEFAULT_TASK}; see `lopt tasks`)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cfg", help="task config as JSON, merged over the family's defaults")
    group.add_argument("--seed", type=int, help="sample the task config with this seed instead of the default")
    parser.add_argument("--optimizer", default="adam",
                        help="baseline optimizer (default adam), or 'pretrained' for lopt's shipped learned optimizer "
                             "(no hyperparameters; --hparam state_dtype=bfloat16 halves its memory, --hparam kernel=auto "
                             "steps with the fused GPU kernel)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the optimizer's default)")
    parser.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                        help="other optimizer hyperparameter, repeatable (e.g. --hparam b1=0.8)")
    parser.add_argument("--steps", type=int, default=2000, help="inner steps (default 2000)")
    parser.add_argument("--eval-every", type=int, help="evaluate valid/test every N steps (default steps/20)")
    parser.add_argument("--eval-batches", type=int, default=16, help="batches per evaluation and split (default 16)")
    parser.add_argument("--key", type=int, default=0, help="seed of init and batches (default 0)")
    parser.add_argument("--out", help="output directory (default runs/<task>-<optimizer>-<time>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="if --out holds a run, move its files into --out/previous-<time>/ first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def task_config(args: argparse.Namespace) -> lopt.tasks.TaskConfig:
    """The task config selected by ``--task``, ``--cfg`` and ``--seed``."""
    family = lopt.tasks.get(args.task)
    if args.seed is not None:
        return family.sample(args.seed)
    overrides = {}
    if args.cfg:
        overrides = dict(lopt.tasks.TaskConfig.from_json(args.cfg))
    cfg = family.complete(overrides)
    explicit_dataset = "dataset" in overrides
    if "dataset" in cfg and not explicit_dataset and cfg["dataset"] not in lopt.tasks.datasets.available():
        print(f"note: dataset {cfg['dataset']!r} is not installed; using {FALLBACK_DATASET!r} instead "
              "(install Fashion-MNIST with `apt-get install dataset-fashion-mnist`).", file=sys.stderr)
        cfg = cfg.replace(dataset=FALLBACK_DATASET)
    return cfg


def given_hparams(args: argparse.Namespace) -> dict:
    """``--hparam NAME=VALUE`` items (values parsed as JSON where they are) and ``--lr``."""
    hparams = {}
    for item in args.hparam:
        if "=" not in item:
            raise ValueError(f"--hparam {item!r} must look like NAME=VALUE, e.g. --hparam b1=0.8.")
        name, value = item.split("=", 1)
        hparams[name.strip()] = _parse_value(value.strip())
    if args.lr is not None:
        hparams["learning_rate"] = args.lr
    return hparams


def optimizer_hparams(args: argparse.Namespace) -> dict:
    """Hyperparameters from ``--lr`` and ``--hparam``; ``total_steps`` filled in where needed."""
    hparams = given_hparams(args)
    if "total_steps" in lopt.optimizers.defaults(args.optimizer) and "total_steps" not in hparams:
        hparams["total_steps"] = args.steps
    return hparams


def _write_outputs(out: str, cfg, optimizer: str, hparams: dict, curves, summary: dict) -> None:
    with open(os.path.join(out, "train_loss.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "train_loss"])
        writer.writerows((i + 1, float(v)) for i, v in enumerate(np.asarray(curves.train_loss)))
    columns = ["valid_loss", "valid_accuracy", "test_loss", "test_accuracy"]
    with open(os.path.join(out, "eval.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *columns])
        for i, step in enumerate(np.asarray(curves.eval_steps)):
            writer.writerow([int(step), *(float(np.asarray(getattr(curves, c))[i]) for c in columns)])
    record = {"task": cfg.to_dict(), "optimizer": optimizer, "hparams": hparams, "summary": summary,
              "lopt_version": lopt.__version__, "jax_version": jax.__version__,
              "curves": {k: np.asarray(v).tolist() for k, v in vars(curves).items()}}
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(record, f, indent=1, allow_nan=True)


def _train(args: argparse.Namespace, task, optimizer) -> tuple:
    """Trains with a progress bar; returns the curves and the seconds taken."""
    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, unit="step", disable=args.no_progress, desc="training (compiling)")
    losses, evals, steps = [], [], []
    start = time.perf_counter()
    for step, chunk_losses, metrics, state in lopt.inner.iterate(
            task, optimizer, key=jax.random.key(args.key), num_steps=args.steps,
            eval_every=args.eval_every, eval_batches=args.eval_batches):
        losses.append(np.asarray(chunk_losses))
        evals.append({k: float(v) for k, v in metrics.items()})
        steps.append(step)
        bar.set_description("training")
        bar.set_postfix(train=f"{np.nanmean(losses[-1]) if losses[-1].size else float('nan'):.4f}",
                        valid=f"{evals[-1]['valid_loss']:.4f}")
        bar.update(step - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    curves = lopt.inner.Curves(
        train_loss=np.concatenate(losses), eval_steps=np.asarray(steps),
        diverged=np.asarray(state.diverged), diverged_step=np.asarray(state.diverged_step),
        **{k: np.asarray([e[k] for e in evals]) for k in evals[0]})
    return curves, seconds


def _print_summary(summary: dict) -> None:
    print(f"\nfinal train loss (mean of last 10 steps): {summary['final_train_loss']:.4f}")
    print(f"final valid loss {summary['final_valid_loss']:.4f}, test loss {summary['final_test_loss']:.4f}")
    if np.isfinite(summary["final_test_accuracy"]):
        print(f"final valid accuracy {summary['final_valid_accuracy']:.4f}, "
              f"test accuracy {summary['final_test_accuracy']:.4f}")
    if summary["diverged"]:
        print(f"DIVERGED at step {summary['diverged_step']} (non-finite loss or params); "
              "try a smaller learning rate.")
    elif summary["blew_up"]:
        print(f"BLEW UP: the loss ended more than {lopt.inner.BLOW_UP_FACTOR:g}x above where it started "
              f"(train {summary['initial_train_loss']:.4g} -> {summary['final_train_loss']:.4g}, valid "
              f"{summary['initial_valid_loss']:.4g} -> {summary['final_valid_loss']:.4g}); "
              "try a smaller learning rate.")


def run(args: argparse.Namespace) -> int:
    cfg = task_config(args)
    if args.optimizer == "pretrained" or args.optimizer.startswith("pretrained:"):
        hparams = given_hparams(args)
        unknown = sorted(set(hparams) - {"state_dtype", "kernel", "kernel_precision"})
        if unknown:
            raise ValueError(f"--optimizer pretrained has no learning rate or hyperparameters to set (got "
                             f"{unknown}); drop --lr/--hparam. Its execution options: --hparam state_dtype=bfloat16 "
                             "(half the memory), --hparam kernel=auto (the fused GPU kernel), --hparam "
                             "kernel_precision=float16 (that kernel's network in packed float16).")
        name = args.optimizer.partition(":")[2] or "default"
        optimizer = lopt.pretrained.optimizer(name, num_steps=args.steps, state_dtype=hparams.get("state_dtype"),
                                              kernel=hparams.get("kernel"),
                                              kernel_precision=hparams.get("kernel_precision"))
    else:
        hparams = optimizer_hparams(args)
        optimizer = lopt.optimizers.get(args.optimizer, **hparams)
    task = lopt.tasks.build(cfg)
    out = args.out or os.path.join("runs", f"{args.task}-{args.optimizer}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        with DirectoryLock(out):
            moved = claim(out, OUTPUTS, overwrite=args.overwrite, what="the results of a `lopt run`",
                          hint="choose another --out, or pass --overwrite to move them into a "
                               "previous-<time>/ sub-folder.")
            if moved is not None:
                print(f"moved the previous results in {out} to {moved}")
            print(f"task: {cfg.to_json()}  ({task.num_params():,} params)")
            print(f"optimizer: {args.optimizer} {json.dumps(hparams)}")
            curves, seconds = _train(args, task, optimizer)
            summary = {**curves.summary(), "seconds": seconds, "steps": args.steps}
            _write_outputs(out, cfg, args.optimizer, hparams, curves, summary)
            plot = plot_learning_curves({args.optimizer: curves}, os.path.join(out, "learning_curve.png"),
                                        title=f"{args.task} {cfg.to_json()}\n{args.optimizer} {json.dumps(hparams)}")
    except FileNotFoundError:
        raise
    except OSError as err:  # disk full, permissions, --out is a file
        where = f" ({err.filename})" if err.filename else ""
        raise ValueError(f"{err.strerror or err}{where}; fix that (free space, permissions or --out).") from None
    _print_summary(summary)
    print(f"{args.steps} steps in {seconds:.1f}s (including compilation)")
    print(f"wrote {out}/: train_loss.csv, eval.csv, run.json, {os.path.basename(plot)}")
    return 0
