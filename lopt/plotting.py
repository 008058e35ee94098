"""Plots people would rather look at than read: learning curves."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

__all__ = ["plot_learning_curves", "smooth"]


def smooth(values: np.ndarray, window: int, *, relative: float = 0.0) -> np.ndarray:
    """Trailing moving average that ignores NaNs (same length as ``values``).

    Args:
        values: the series.
        window: the largest number of points averaged.
        relative: if positive, point ``i`` averages only the last ``max(1, relative * i)`` points
            (at most ``window``), so early points are not smeared on a log-scaled step axis.

    Example:
        >>> smooth(np.array([1.0, 3.0, 5.0]), 2).tolist()
        [1.0, 2.0, 4.0]
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    index = np.arange(len(values))
    widths = np.full(len(values), window)
    if relative > 0:
        widths = np.clip((relative * (index + 1)).astype(int), 1, window)
    lo = index - widths
    prev_sums = np.where(lo >= 0, sums[np.maximum(lo, 0)], 0.0)
    prev_counts = np.where(lo >= 0, counts[np.maximum(lo, 0)], 0)
    n = counts - prev_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums - prev_sums) / np.maximum(n, 1), np.nan)


def _style_step_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("inner step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_learning_curves(runs: Mapping[str, object], path: str | os.PathLike, *, title: str = "") -> str:
    """Saves a PNG of training loss (every step) and valid/test loss and accuracy (periodic).

    Args:
        runs: ``{label: Curves}`` of single runs (see :class:`lopt.inner.Curves`).
        path: where to write the PNG.
        title: figure title.

    Returns:
        The path written.

    Example:
        >>> import jax, optax, lopt, tempfile, os
        >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
        >>> curves = lopt.inner.train(task, optax.adam(0.1), key=jax.random.key(0), num_steps=50)
        >>> out = plot_learning_curves({"adam": curves}, os.path.join(tempfile.mkdtemp(), "c.png"))
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_accuracy = any(np.isfinite(np.asarray(c.valid_accuracy)).any() for c in runs.values())
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(12 if has_accuracy else 7, 4.5), squeeze=False)
    loss_ax = axes[0, 0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    positive = True
    for i, (label, curves) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        train = np.asarray(curves.train_loss, dtype=np.float64)
        steps = np.arange(1, len(train) + 1)
        positive &= bool(np.all(train[np.isfinite(train)] > 0))
        loss_ax.plot(steps, train, color=color, alpha=0.2, linewidth=0.8)
        loss_ax.plot(steps, smooth(train, max(1, len(train) // 50), relative=0.2), color=color, label=label)
        eval_steps = np.maximum(np.asarray(curves.eval_steps), 1)
        loss_ax.plot(eval_steps, np.asarray(curves.valid_loss), "o--", color=color, markersize=3)
        loss_ax.plot(eval_steps, np.asarray(curves.test_loss), "s:", color=color, markersize=3)
        if has_accuracy:
            axes[0, 1].plot(eval_steps, np.asarray(curves.valid_accuracy), "o--", color=color, markersize=3,
                            label=label)
            axes[0, 1].plot(eval_steps, np.asarray(curves.test_accuracy), "s:", color=color, markersize=3)
        if bool(np.asarray(curves.diverged)):
            loss_ax.axvline(int(curves.diverged_step) + 1, color=color, linestyle="-.", linewidth=1,
                            label=f"{label} diverged")
    if positive:
        loss_ax.set_yscale("log")
    _style_step_axis(loss_ax, "loss", "loss — solid: train (raw, smoothed), dashed ●: valid, dotted ■: test")
    if has_accuracy:
        _style_step_axis(axes[0, 1], "accuracy", "accuracy — dashed ●: valid, dotted ■: test")
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.fill(line, 150) for line in title.splitlines()), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
