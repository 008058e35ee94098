"""Held-out evaluation of a learned optimizer against Adam: default, suite-tuned and per-task-tuned.

Every task of :mod:`lopt.pretrained.heldout` (tasks the pretrained optimizer's campaign never
trains on) is trained with ``--seeds`` seeds by

* the candidate: ``--theta PATH`` (a theta file), ``--init ARCH`` (that architecture at its
  initial theta; ``nominal`` at init *is* Adam(1e-3), a sanity check) or ``--optax NAME`` (a
  hand-designed, learning-rate-free optimizer at its published defaults, e.g. ``prodigy``: what a
  pretrained optimizer has to beat to be worth its weights), with ``num_steps`` = the task's
  horizon (one program per task: ``lopt.inner.train`` vmapped over seeds);
* Adam over a 15-point log grid of learning rates 1e-5..1 plus the default 1e-3 (one program per
  task: ``lopt.inner.train_many``). Every run of one seed starts from the same params and sees the
  same batches as the candidate's run of that seed.

Baselines, all selected on the **validation** loss (final, mean over seeds; a diverged seed
makes a setting worst):

* ``adam_default``: Adam at learning rate 1e-3 (not selected);
* ``adam_suite``: the one grid learning rate with the best median normalised validation loss over
  the suite's tasks (normalised per task: initial loss -> 1, best grid point -> 0);
* ``adam_per_task``: the grid learning rate with the best validation loss on each task.

Scores use the **test** loss (the split nothing is selected on): a *win* is a lower final test
loss (mean over seeds) than the baseline's (ties, within a relative 1e-3, count one half);
the *speedup* is VeLO's
(:func:`lopt.evaluate.metrics.speedup`): the steps the baseline's mean test curve needs to reach
the candidate's final mean test loss (plus the 1e-3 tie slack), over the horizon (> 1: the candidate is faster; inf: the
baseline never gets there), on the evaluation grid of ``horizon / 40`` steps (fewer
evaluations on horizons under 1,000 steps: one per 25 steps, at least 5). Normalised
losses in the table use the task's initial test loss (-> 1) and the best grid point's test
loss (-> 0).

Usage:
    python benchmarks/pretrained_heldout.py --theta path/to/theta.safetensors
    python benchmarks/pretrained_heldout.py --init nominal --steps-scale 0.05 --seeds 1   # quick CPU check
    python benchmarks/pretrained_heldout.py --optax prodigy --quick --save-as pretrained_heldout_prodigy
    python benchmarks/pretrained_heldout.py --theta T --partial $OUT/part.json --out $OUT   # resumable, in parts
    python benchmarks/pretrained_heldout.py --theta T2 --baselines benchmarks/results/earlier.json  # Adam reused
Prints a table last; saves ``<--save-as, default pretrained_heldout>_<device>.json`` and a PNG of
learning curves in ``--out DIR`` (default ``benchmarks/results/``). With ``--partial FILE`` each
finished task is kept in FILE at once and a rerun skips it (``heldout_partial.py``): a GPU call
cut at its time limit loses at most the task it was training. With ``--baselines FILE`` Adam's
grid runs are read from an earlier run's results instead of trained again
(``heldout_baselines.py``): a second candidate then costs its own runs only. Runs stored by other
code (lopt's tasks or inner loop changed since) are reused when the grid, trained again for its
first two evaluation intervals, reproduces their first points; otherwise the task's grid is trained
again in full.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS_DIR, device_tag, free_path, save
from heldout_baselines import adam_baselines, adam_code, reproduces
from heldout_partial import PartialResults

import lopt
from lopt import checkpoint
from lopt.evaluate import metrics
from lopt.pretrained import heldout

#: The per-task grid: 15 log-spaced learning rates, 1e-5..1.
GRID = lopt.optimizers.learning_rate_grid(15, low=1e-5, high=1.0)
DEFAULT_LR = 1e-3
#: Evaluations per run: one every 25 steps, at least 5 and at most 40 (40 on the full suite).
MAX_EVALS, MIN_EVALS, STEPS_PER_EVAL = 40, 5, 25
EVAL_BATCHES = 8
BASELINES = ("adam_default", "adam_suite", "adam_per_task")
#: Final losses within this relative difference are a tie (float noise is not a win), and the
#: speedup's target is the candidate's final loss plus this slack.
TIE_TOLERANCE = 1e-3


def with_tie_tolerance(candidate_loss: float, baseline_loss: float) -> float:
    """The candidate's loss, snapped to the baseline's when they differ by less than the tolerance."""
    close = abs(candidate_loss - baseline_loss) <= TIE_TOLERANCE * max(abs(baseline_loss), 1e-12)
    return baseline_loss if close else candidate_loss


def horizon_and_eval_every(num_steps: int) -> tuple[int, int]:
    """Rounds the horizon to a multiple of the evaluation interval (5..40 evaluations per run)."""
    num_evals = min(MAX_EVALS, max(MIN_EVALS, num_steps // STEPS_PER_EVAL))
    every = max(1, round(num_steps / num_evals))
    return every * max(1, round(num_steps / every)), every


def _learning_rate_free(name: str, num_steps: int) -> optax.GradientTransformation:
    """A hand-designed optimizer with no learning rate to tune, at its published defaults."""
    import optax.contrib

    makers = {"prodigy": lambda: optax.contrib.prodigy(1.0),
              "prodigy_cosine": lambda: optax.contrib.prodigy(optax.cosine_decay_schedule(1.0, num_steps)),
              "dog": lambda: optax.contrib.dog(1.0), "dowg": lambda: optax.contrib.dowg(1.0),
              "dadapt_adamw": lambda: optax.contrib.dadapt_adamw(1.0)}
    return makers[name]()


#: ``--optax`` choices: learning-rate-free optimizers from ``optax.contrib``.
LEARNING_RATE_FREE = ("prodigy", "prodigy_cosine", "dog", "dowg", "dadapt_adamw")


class HandDesigned:
    """An optax optimizer behind the learned optimizer's ``optimizer(theta, num_steps=...)`` call."""

    def __init__(self, name: str):
        if name not in LEARNING_RATE_FREE:
            raise ValueError(f"--optax {name!r}: choose one of {LEARNING_RATE_FREE}.")
        self.name = name

    def optimizer(self, theta, *, num_steps: int) -> optax.GradientTransformationExtraArgs:
        del theta
        return optax.with_extra_args_support(_learning_rate_free(self.name, num_steps))


def candidate(args) -> tuple[str, object, object]:
    """``(label, theta, optimizer maker)`` from ``--theta``, ``--init`` or ``--optax``."""
    if getattr(args, "optax", None):
        return args.optax, jnp.zeros(()), HandDesigned(args.optax)
    if args.theta:
        theta, lopt_ = lopt.learned.load_theta(args.theta)
        label = os.path.splitext(os.path.basename(args.theta))[0]
        if getattr(args, "state_dtype", None):
            try:
                lopt_ = lopt_.with_execution_options(state_dtype=args.state_dtype)
            except ValueError as e:
                raise SystemExit(f"--state-dtype: {e}") from e
            label += f"@{args.state_dtype}"
        return label, theta, lopt_
    lopt_ = lopt.learned.get(args.init)
    return f"{args.init}@init", lopt_.init(jax.random.key(0)), lopt_


def seed_keys(num_seeds: int) -> jax.Array:
    """The keys ``train_many`` gives seed ``s``: ``fold_in(key(0), s)``."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(jnp.arange(num_seeds))


def train_adam(task, num_steps: int, eval_every: int, num_seeds: int):
    """Curves of Adam on ``GRID + [1e-3]``, ``[G + 1, S, ...]``."""
    return jax.tree.map(np.asarray, lopt.inner.train_many(
        task, optax.adam, {"learning_rate": np.append(GRID, DEFAULT_LR)}, key=jax.random.key(0),
        num_seeds=num_seeds, num_steps=num_steps, eval_every=eval_every, eval_batches=EVAL_BATCHES))


#: Evaluations of the grid's first steps that check Adam runs stored by other code (``check_reused``).
CHECK_EVALUATIONS = 2


def check_reused(task, reused: dict, eval_every: int, num_seeds: int) -> dict | None:
    """Whether Adam's runs read from ``--baselines`` by other code are still this code's runs.

    Trains the grid (the same program as the stored runs: every learning rate and seed at once)
    for its first :data:`CHECK_EVALUATIONS` evaluation intervals and compares each learning rate's
    mean test curve with the stored one's first points (:func:`heldout_baselines.reproduces`). The
    same program gives the same bits; a change to the data, the initialisation, the loss or the
    update shows at once. Training one learning rate alone instead is no check: its vmap of 1
    instead of 17 reorders the convolutions' sums on the CPU, which ``conv_fc_fashion28`` amplifies
    to 0.8% in 200 steps and 5% over its 2,000.

    Returns:
        What the check found (stored in the task record as ``adam_checked``) when every curve is
        reproduced, else ``None`` (the grid is then trained again in full).
    """
    prefix = CHECK_EVALUATIONS * eval_every
    fresh = seed_mean(train_adam(task, prefix, eval_every, num_seeds).test_loss)  # [G + 1, E]
    worst, same = 0.0, True
    for i, curve in enumerate(fresh):
        ok, difference = reproduces(reused["test_curves"][f"lr_{i}"][:len(curve)], curve.tolist())
        same, worst = same and ok, max(worst, difference)
    print(f"  Adam's grid trained again for its first {prefix} steps: largest relative difference from the "
          f"stored curves {worst:.2e} ({'reused' if same else 'not the same runs'})", flush=True)
    if not same:
        return None
    return {"steps": prefix, "max_relative_difference": worst, "stored_code": reused["adam_code"]}


def train_candidate(task, lopt_, theta, num_steps: int, eval_every: int, num_seeds: int):
    """Curves of the candidate, ``[S, ...]`` (seed ``s`` as Adam's seed ``s``)."""
    kwargs = {"num_steps": num_steps, "eval_every": eval_every, "eval_batches": EVAL_BATCHES}

    @jax.jit
    def run(theta, keys):
        optimizer = lopt_.optimizer(theta, num_steps=num_steps)
        return jax.vmap(lambda k: lopt.inner.train(task, optimizer, key=k, **kwargs))(keys)

    return jax.tree.map(np.asarray, run(theta, seed_keys(num_seeds)))


def train_task(task, lopt_, theta, num_steps: int, eval_every: int, num_seeds: int) -> dict[str, np.ndarray]:
    """Curves of the candidate ``[S, ...]`` and of Adam on ``GRID + [1e-3]`` ``[G + 1, S, ...]``."""
    return {"adam": train_adam(task, num_steps, eval_every, num_seeds),
            "cand": train_candidate(task, lopt_, theta, num_steps, eval_every, num_seeds)}


def seed_mean(curves_loss: np.ndarray) -> np.ndarray:
    """Mean over the seed axis (the second to last); NaN if any seed diverged."""
    return np.mean(curves_loss, axis=-2)


def summarize_adam(num_steps: int, adam) -> dict:
    """The Adam part of a task's record: final losses, the per-task choice, curves."""
    valid = seed_mean(adam.valid_loss)  # [G + 1, E]
    test = seed_mean(adam.test_loss)
    grid_valid = valid[: len(GRID), -1]
    per_task = metrics.select_per_task(grid_valid)
    finite = np.where(np.isfinite(test[: len(GRID), -1]), test[: len(GRID), -1], np.inf)
    return {
        "num_steps": num_steps, "eval_steps": adam.eval_steps[0, 0].tolist(),
        "initial_valid": float(valid[0, 0]), "initial_test": float(test[0, 0]),
        "grid_final_valid": grid_valid.tolist(), "grid_final_test": test[: len(GRID), -1].tolist(),
        "best_grid_test": float(finite.min()) if np.isfinite(finite.min()) else float(test[0, 0]),
        "per_task_index": per_task, "per_task_lr": float(GRID[per_task]),
        "default_index": len(GRID),
        "test_curves": {f"lr_{i}": test[i].tolist() for i in range(len(test))},
    }


def summarize_task(name: str, num_steps: int, out: dict, adam_record: dict | None = None) -> dict:
    """Per-task numbers: final losses, the per-task choice, curves (suite choice filled in later).

    ``adam_record``: Adam's part read from an earlier run (``--baselines``) instead of ``out["adam"]``.
    """
    adam = adam_record if adam_record is not None else summarize_adam(num_steps, out["adam"])
    cand = out["cand"]
    cand_valid, cand_test = seed_mean(cand.valid_loss[None])[0], seed_mean(cand.test_loss[None])[0]
    return {
        "name": name, **{k: v for k, v in adam.items() if k not in ("test_curves", "adam_code")},
        "candidate_final_valid": float(cand_valid[-1]), "candidate_final_test": float(cand_test[-1]),
        "candidate_diverged_seeds": int(np.sum(cand.diverged)),
        "test_curves": {"candidate": cand_test.tolist(), **adam["test_curves"]},
    }


def choose_suite_lr(tasks: list[dict]) -> int:
    """The grid index with the best median normalised validation loss over the tasks."""
    scores = np.stack([metrics.normalized(t["grid_final_valid"], t["initial_valid"],
                                          np.nanmin(np.where(np.isfinite(t["grid_final_valid"]),
                                                             t["grid_final_valid"], np.nan)))
                       for t in tasks])  # [tasks, G]
    return int(np.argmin(np.median(scores, axis=0)))


def compare(tasks: list[dict], suite_index: int) -> dict:
    """Fills each task's baseline numbers and returns the overall win fractions and speedups."""
    overall = {}
    for task in tasks:
        chosen = {"adam_default": task["default_index"], "adam_suite": suite_index,
                  "adam_per_task": task["per_task_index"]}
        cand_curve = np.asarray(task["test_curves"]["candidate"][1:], np.float64)
        cand_curve[-1] += TIE_TOLERANCE * abs(cand_curve[-1])  # reaching within the tolerance counts
        task["baselines"] = {}
        for baseline, index in chosen.items():
            curve = np.asarray(task["test_curves"][f"lr_{index}"], np.float64)
            task["baselines"][baseline] = {
                "learning_rate": float(np.append(GRID, DEFAULT_LR)[index]),
                "final_test": float(curve[-1]),
                "speedup": metrics.speedup(cand_curve, curve[1:]),
                "normalized_test": float(metrics.normalized(curve[-1], task["initial_test"], task["best_grid_test"])),
            }
        task["candidate_normalized_test"] = float(metrics.normalized(task["candidate_final_test"],
                                                                      task["initial_test"], task["best_grid_test"]))
    for baseline in BASELINES:
        base = [t["baselines"][baseline]["final_test"] for t in tasks]
        cand = [with_tie_tolerance(t["candidate_final_test"], b) for t, b in zip(tasks, base)]
        speedups = [t["baselines"][baseline]["speedup"] for t in tasks]
        overall[baseline] = {"win_fraction": metrics.win_fraction(cand, base),
                             "median_speedup": metrics.median(speedups),
                             "median_normalized_test": float(np.median([t["baselines"][baseline]["normalized_test"]
                                                                        for t in tasks]))}
    overall["candidate_median_normalized_test"] = float(np.median([t["candidate_normalized_test"] for t in tasks]))
    overall["suite_learning_rate"] = float(GRID[suite_index])
    return overall


def plot(tasks: list[dict], label: str, path: str) -> str:
    """A grid of small panels (one per task): mean test curves of the candidate and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    styles = {"adam_default": ("tab:gray", "--"), "adam_suite": ("tab:orange", "-."), "adam_per_task": ("tab:blue", ":")}
    for ax, task in zip(axes.flat, tasks):
        steps = task["eval_steps"]
        for baseline, (color, style) in styles.items():
            b = task["baselines"][baseline]
            ax.plot(steps, task["test_curves"][f"lr_{chosen_index(task, baseline)}"], style, color=color,
                    label=f"{baseline} ({b['learning_rate']:.2g})")
        ax.plot(steps, task["test_curves"]["candidate"], "-", color="tab:red", label=label)
        finite = [v for v in task["test_curves"]["candidate"] + task["test_curves"][f"lr_{task['per_task_index']}"]
                  if np.isfinite(v)]
        if finite:
            low, high = min(finite), task["initial_test"]
            if low > 0 and high > 100 * low:  # losses over decades (quadratics, Rosenbrock): log scale
                ax.set_yscale("log")
                ax.set_ylim(low / 2, max(high, low) * 2)
            else:
                pad = 0.05 * max(high - low, 1e-12)
                ax.set_ylim(low - pad, max(high, low) + pad)
        ax.set_title(task["name"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"held-out suite: mean test loss vs step ({label})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chosen_index(task: dict, baseline: str) -> int:
    """The Adam run index (into ``GRID + [1e-3]``) a baseline uses on ``task``."""
    lr = task["baselines"][baseline]["learning_rate"]
    return int(np.argmin(np.abs(np.log(np.append(GRID, DEFAULT_LR)) - np.log(lr))))


def table(tasks: list[dict], overall: dict, label: str) -> str:
    """The per-task table and the overall lines."""
    head = (f"{'task':34s} {'steps':>6s} {'cand':>9s} {'adam1e-3':>9s} {'suite':>9s} {'per-task':>9s} "
            f"{'lr*':>8s} {'x def':>6s} {'x suite':>7s} {'x tuned':>7s}")
    lines = [f"candidate: {label}; final test loss (mean over seeds); x = speedup of the candidate; measured on "
             + ", ".join(f"{d} ({sum(t['device'] == d for t in tasks)} tasks)" for d in devices_tag(tasks).split("+")),
             head, "-" * len(head)]
    for t in tasks:
        b = t["baselines"]
        lines.append(f"{t['name']:34s} {t['num_steps']:6d} {t['candidate_final_test']:9.4g} "
                     f"{b['adam_default']['final_test']:9.4g} {b['adam_suite']['final_test']:9.4g} "
                     f"{b['adam_per_task']['final_test']:9.4g} {t['per_task_lr']:8.2g} "
                     f"{b['adam_default']['speedup']:6.2f} {b['adam_suite']['speedup']:7.2f} "
                     f"{b['adam_per_task']['speedup']:7.2f}")
    lines.append("-" * len(head))
    lines.append(f"suite-tuned Adam learning rate: {overall['suite_learning_rate']:.3g}; candidate median "
                 f"normalised test loss {overall['candidate_median_normalized_test']:.3f} (1 = initial, "
                 "0 = best grid point)")
    for baseline in BASELINES:
        o = overall[baseline]
        lines.append(f"vs {baseline:14s}: win fraction {o['win_fraction']:.2f} of {len(tasks)} tasks, median "
                     f"speedup {o['median_speedup']:.2f}, baseline median normalised test loss "
                     f"{o['median_normalized_test']:.3f}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--theta", help="theta safetensors file of the candidate learned optimizer")
    group.add_argument("--init", help="an architecture at its initial theta (e.g. nominal = Adam 1e-3)")
    group.add_argument("--optax", choices=LEARNING_RATE_FREE,
                       help="a hand-designed learning-rate-free optimizer (optax.contrib) as the candidate")
    parser.add_argument("--state-dtype", default=None, choices=["float32", "bfloat16"],
                        help="with --theta: store the candidate's optimizer state in this dtype (an execution option)")
    parser.add_argument("--tasks", nargs="+", default=None, choices=heldout.names(), help="a subset of the suite")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every horizon")
    parser.add_argument("--quick", action="store_true", help="--steps-scale 0.05 --seeds 1")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the results JSON and learning-curve PNG")
    parser.add_argument("--partial", default=None,
                        help="JSON file that keeps each finished task (rewritten after every task); a rerun with "
                             "the same file and settings skips the tasks already there (split the suite over calls)")
    parser.add_argument("--baselines", nargs="+", default=[], metavar="FILE",
                        help="results or --partial JSON files of earlier runs: reuse their Adam grid runs for the "
                             "tasks they hold at the same horizon, seeds and device (heldout_baselines.py)")
    parser.add_argument("--save-as", default="pretrained_heldout",
                        help="<--out>/<SAVE_AS>_<devices>.json and .png; name each run so it does not replace an earlier one")
    args = parser.parse_args(argv)
    if not args.save_as.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--save-as={args.save_as!r}: use letters, digits, '_' and '-' only")
    if args.quick:
        args.steps_scale, args.seeds = 0.05, 1
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds} must be >= 1")
    return args


def measurement_settings(args, label: str) -> dict:
    """What makes two runs one measurement (``--partial`` refuses to mix others)."""
    return {"candidate": label, "theta_digest": checkpoint.stored_digest(args.theta) if args.theta else None,
            "init": args.init,
            "optax": args.optax, "seeds": args.seeds, "steps_scale": args.steps_scale}


def devices_tag(tasks: list[dict]) -> str:
    """The result files' device part: each device the tasks were measured on, joined by ``+``.

    Example:
        >>> devices_tag([{"device": "gpu-NVIDIA_H200"}, {"device": "cpu"}, {"device": "cpu"}])
        'cpu+gpu-NVIDIA_H200'
    """
    return "+".join(sorted({t["device"] for t in tasks}))


def main(argv=None) -> dict:
    args = parse_args(argv)
    label, theta, lopt_ = candidate(args)
    suite = heldout.suite(args.tasks, steps_scale=args.steps_scale)
    partial = PartialResults(args.partial, measurement_settings(args, label)) if args.partial else None
    baselines = adam_baselines(args.baselines, seeds=args.seeds, steps_scale=args.steps_scale, grid=GRID.tolist())
    tasks = []
    for entry in suite:
        if partial is not None and entry.name in partial.done():
            tasks.append(partial.get(entry.name))
            print(f"{entry.name}: from {args.partial} ({tasks[-1]['seconds']:.1f} s when measured)", flush=True)
            continue
        task_start = time.perf_counter()
        num_steps, eval_every = horizon_and_eval_every(entry.num_steps)
        task = entry.build()
        reused = baselines.get(entry.name)
        if reused is not None and (reused["num_steps"], reused["device"]) != (num_steps, device_tag()):
            print(f"{entry.name}: --baselines holds Adam at {reused['num_steps']} steps on {reused['device']}; "
                  f"training Adam again ({num_steps} steps on {device_tag()})", flush=True)
            reused = None
        checked = None
        if reused is not None and reused["adam_code"] not in (None, adam_code()):
            print(f"{entry.name}: --baselines holds Adam runs of other code (tasks or inner loop changed); "
                  "checking them against this code's", flush=True)
            checked = check_reused(task, reused, eval_every, args.seeds)
            if checked is None:
                print(f"{entry.name}: training Adam again", flush=True)
                reused = None
        what = "the candidate" if reused is not None else f"Adam at {len(GRID) + 1} learning rates and the candidate"
        print(f"{entry.name}: training {what}, {num_steps} steps x {args.seeds} seeds ...", flush=True)
        if reused is None:
            out = train_task(task, lopt_, theta, num_steps, eval_every, args.seeds)
        else:
            out = {"cand": train_candidate(task, lopt_, theta, num_steps, eval_every, args.seeds)}
        tasks.append(summarize_task(entry.name, num_steps, out, reused))
        tasks[-1]["seconds"] = time.perf_counter() - task_start
        tasks[-1]["device"] = device_tag()
        tasks[-1]["adam_code"] = adam_code() if reused is None or checked else reused["adam_code"]
        if checked:
            tasks[-1]["adam_checked"] = checked
        if partial is not None:
            partial.add(tasks[-1])
        print(f"{entry.name}: {num_steps} steps x {args.seeds} seeds, {tasks[-1]['seconds']:.1f} s "
              f"(candidate {tasks[-1]['candidate_final_test']:.4g}, best Adam lr {tasks[-1]['per_task_lr']:.2g})",
              flush=True)
    overall = compare(tasks, choose_suite_lr(tasks))
    total = sum(t["seconds"] for t in tasks)  # measuring time, also of tasks read from --partial
    os.makedirs(args.out, exist_ok=True)
    tag = devices_tag(tasks)
    png = plot(tasks, label, os.path.join(args.out, f"{args.save_as}_{tag}.png"))
    payload = {"candidate": label, "theta": args.theta, "init": args.init, "optax": args.optax, "state_dtype": args.state_dtype, "seeds": args.seeds,
               "steps_scale": args.steps_scale, "grid": GRID.tolist(), "default_lr": DEFAULT_LR,
               "selection": "final validation loss, mean over seeds",
               "score": "final test loss, mean over seeds; speedup on the mean test curve",
               "total_seconds": total, "overall": overall, "tasks": tasks, "plot": png,
               "devices": {d: [t["name"] for t in tasks if t["device"] == d] for d in tag.split("+")}}
    path = save(args.save_as, payload, free_path(os.path.join(args.out, f"{args.save_as}_{tag}.json")))
    print(f"\nsaved {path} and {png}; {total:.0f} s in all\n")
    print(table(tasks, overall, label))
    return payload


if __name__ == "__main__":
    main()
