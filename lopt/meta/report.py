"""After meta-training: compare the learned optimizer with Adam on fresh tasks; plots and a summary."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lopt
from lopt.inner.training import Curves
from lopt.meta.metrics_log import read_metrics
from lopt.plotting import plot_learning_curves, smooth

__all__ = ["compare_with_adam", "plot_meta_training", "write_summary"]

FRESH_TASK_STREAM = 7_777_777


def _mean_curves(curves: Curves) -> Curves:
    """Mean over the leading (seed) axis, ignoring NaNs of diverged runs (divergence is in the table)."""
    import warnings

    skip = ("eval_steps", "diverged", "diverged_step")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns when every seed diverged
        means = {k: np.nanmean(np.asarray(v, np.float64), axis=0) for k, v in vars(curves).items() if k not in skip}
    return Curves(eval_steps=np.asarray(curves.eval_steps)[0], diverged=np.asarray(False),
                  diverged_step=np.asarray(-1), **means)


def compare_with_adam(lopt_, theta, task, *, learning_rates, num_steps: int, num_seeds: int, seed: int,
                      tail: int = 50) -> dict[str, Any]:
    """Trains ``task`` with the learned optimizer and with Adam at each learning rate, on fresh seeds.

    Every optimizer uses the same ``num_seeds`` init/data seeds (disjoint from meta-training's).
    Adam's grid is one vmapped program; so is the learned optimizer over seeds.

    Returns:
        ``{"rows": [{"optimizer", "mean_last_train_loss", "final_test_loss", ...}], "curves": {label:
        mean Curves}}``; ``mean_last_train_loss`` is the mean training loss over the last ``tail``
        steps, averaged over seeds.
    """
    key = jax.random.fold_in(jax.random.key(seed), FRESH_TASK_STREAM)
    eval_every = max(1, num_steps // 20)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(num_seeds))
    learned = jax.jit(jax.vmap(lambda t, k: lopt.inner.train(
        t, lopt_.optimizer(theta, num_steps=num_steps), key=k, num_steps=num_steps, eval_every=eval_every),
        in_axes=(None, 0)))(task, keys)
    adam = lopt.inner.train_many(task, lopt.optimizers.adam, {"learning_rate": np.asarray(learning_rates)},
                                 key=key, num_seeds=num_seeds, num_steps=num_steps, eval_every=eval_every)
    runs = {f"learned ({lopt_.name})": learned}
    for i, lr in enumerate(learning_rates):
        runs[f"adam lr={lr:g}"] = jax.tree.map(lambda x, i=i: x[i], adam)
    rows, curves = [], {}
    for label, run in runs.items():
        train = np.asarray(run.train_loss, np.float64)
        rows.append({
            "optimizer": label,
            "mean_last_train_loss": float(np.mean(train[:, -tail:])),
            "final_valid_loss": float(np.mean(np.asarray(run.valid_loss)[:, -1])),
            "final_test_loss": float(np.mean(np.asarray(run.test_loss)[:, -1])),
            "final_test_accuracy": float(np.mean(np.asarray(run.test_accuracy)[:, -1])),
            "diverged_seeds": int(np.asarray(run.diverged).sum()),
        })
        curves[label] = _mean_curves(run)
    return {"rows": rows, "curves": curves, "num_steps": num_steps, "num_seeds": num_seeds, "tail": tail}


def plot_meta_training(out_dir: str) -> str:
    """PNG of the meta-loss per outer step (raw and smoothed) and held-out evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    evals_path = os.path.join(out_dir, "eval.jsonl")
    evals = read_metrics(evals_path) if os.path.exists(evals_path) else []
    steps = np.array([r["step"] for r in rows])
    meta = np.array([r["meta_loss"] for r in rows], np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].plot(steps, meta, alpha=0.25, color="C0", linewidth=0.8, label="meta-loss (per outer step)")
    axes[0].plot(steps, smooth(meta, max(1, len(meta) // 25)), color="C0", label="smoothed")
    axes[0].set_xlabel("outer step")
    axes[0].set_ylabel("normalised loss (0 = best Adam, 1 = initial)")
    axes[0].set_title("meta-training objective (PES unrolls)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if evals and "heldout_normalized_loss" in evals[0]:  # a mixture run: held-out configs, per family
        e_steps = [r["step"] for r in evals]
        axes[1].plot(e_steps, [r["heldout_normalized_loss"] for r in evals], "o-", color="k", linewidth=2,
                     label="mean over held-out structures")
        for name in sorted(k for k in evals[0] if k.startswith("heldout/")):
            axes[1].plot(e_steps, [r.get(name, np.nan) for r in evals], ".--", alpha=0.7, label=name[len("heldout/"):])
        axes[1].set_ylabel("normalised final loss (0 = best Adam, 1 = initial)")
        axes[1].legend(fontsize=7, ncol=2)
    elif evals:
        e_steps = [r["step"] for r in evals]
        axes[1].plot(e_steps, [r["eval_normalized_loss"] for r in evals], "o-", label="normalised final train loss")
        axes[1].plot(e_steps, [r["eval_valid_loss"] for r in evals], "s--", label="final valid loss (raw)")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("outer step")
    axes[1].set_title("held-out evaluation (fresh inits and batches)")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "meta_training.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(out_dir: str, config, result: dict, comparison: dict | None, task_cfg) -> str:
    """Markdown summary of the run: setup, speed, and the learned optimizer vs Adam table."""
    lines = [f"# lopt meta-training: {config.name}", "",
             f"- learned optimizer: `{config.lopt.name}` {json.dumps(config.lopt.config)}",
             f"- task: `{task_cfg.to_json()}`",
             f"- estimator: {config.estimator.kind}, {config.estimator.num_tasks} tasks, "
             f"unroll {config.estimator.unroll_length}, horizon {config.truncation.kind} "
             f"{config.truncation.horizon}, objective {config.estimator.objective}",
             f"- outer: {config.outer.optimizer} lr {config.outer.learning_rate}, clip {config.outer.clip_grad_norm}",
             f"- outer steps: {result['step']}, wall time {result['seconds']:.0f} s "
             f"({result['inner_steps_per_s']:,.0f} inner steps/s incl. compilation), device "
             f"{jax.devices()[0].device_kind}",
             f"- theta: `{os.path.basename(result['theta_path'])}` (load with `lopt.learned.load_theta`)", ""]
    for note in result.get("notes", []):
        lines.append(f"> note: {note}")
    if comparison:
        lines += ["## Learned optimizer vs Adam on fresh tasks", "",
                  f"{comparison['num_seeds']} fresh seeds, {comparison['num_steps']} inner steps; "
                  f"'train (last {comparison['tail']})' is the mean training loss over the last "
                  f"{comparison['tail']} steps.", "",
                  f"| optimizer | train (last {comparison['tail']}) | valid loss | test loss | test acc | diverged |",
                  "|---|---|---|---|---|---|"]
        for r in comparison["rows"]:
            lines.append(f"| {r['optimizer']} | {r['mean_last_train_loss']:.4f} | {r['final_valid_loss']:.4f} | "
                         f"{r['final_test_loss']:.4f} | {r['final_test_accuracy']:.4f} | {r['diverged_seeds']} |")
        learned = comparison["rows"][0]["mean_last_train_loss"]
        adam = [r for r in comparison["rows"][1:]]
        best = min(adam, key=lambda r: r["mean_last_train_loss"])
        beaten = sum(learned < r["mean_last_train_loss"] for r in adam)
        lines += ["", f"The learned optimizer beats Adam at {beaten} of {len(adam)} learning rates "
                      f"(best Adam: {best['optimizer']}, {best['mean_last_train_loss']:.4f}; learned: {learned:.4f}).",
                  "", "![learning curves](learning_curves.png)", ""]
    lines += ["![meta-training](meta_training.png)", ""]
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def finish_run(out_dir: str, config, setup, result: dict) -> dict:
    """Final comparison with Adam, plots and summary for a finished meta-training run."""
    plot_meta_training(out_dir)
    comparison = None
    task_cfg = setup.task_configs[0]
    if config.final_eval.enabled:
        task = lopt.tasks.build(task_cfg)
        comparison = compare_with_adam(setup.lopt, result["theta"], task,
                                       learning_rates=config.final_eval.adam_learning_rates,
                                       num_steps=config.final_eval.steps, num_seeds=config.final_eval.seeds,
                                       seed=config.seed)
        plot_learning_curves(comparison["curves"], os.path.join(out_dir, "learning_curves.png"),
                             title=f"fresh tasks, mean of {comparison['num_seeds']} seeds: {task_cfg.to_json()}")
        with open(os.path.join(out_dir, "comparison.json"), "w") as f:
            json.dump({k: v for k, v in comparison.items() if k != "curves"}, f, indent=2)
    write_summary(out_dir, config, result, comparison, task_cfg)
    return comparison or {}
