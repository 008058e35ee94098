"""The figures of an evaluation report (PNG, matplotlib's Agg backend).

* :func:`plot_task_curves`: learning curves per task, each candidate and chosen baseline,
  training loss (smoothed mean over seeds, band: smoothed min..max over seeds) and test loss;
* :func:`plot_improvement`: per-task improvement of each candidate over each baseline (sorted),
  and the per-task speedups;
* :func:`plot_sweeps`: final test loss against the swept variable of an OOD suite;
* :func:`plot_normalized`: the distribution of normalised test loss of every optimizer.
"""

from __future__ import annotations

import math
import os
import textwrap

import numpy as np

from lopt.evaluate.analysis import Summary, format_speedup, smoothed_train_loss
from lopt.plotting import smooth

__all__ = ["colors", "plot_improvement", "plot_normalized", "plot_sweeps", "plot_task_curves"]

_CANDIDATE_COLORS = ["#d62728", "#9467bd", "#e377c2", "#8c564b", "#bcbd22"]
_BASELINE_COLORS = ["#1f77b4", "#2ca02c", "#ff7f0e", "#17becf", "#7f7f7f", "#aec7e8"]
_MARKERS = ["o", "s", "D", "v", "P", "X"]  # "^" marks "never reached" in the speedup panel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors(summary: Summary) -> dict[str, str]:
    """A fixed colour per name: warm colours for candidates, cool ones for baselines."""
    out = {name: _CANDIDATE_COLORS[i % len(_CANDIDATE_COLORS)] for i, name in enumerate(summary.candidates)}
    for i, baseline in enumerate(summary.baselines):
        out[baseline.name] = _BASELINE_COLORS[i % len(_BASELINE_COLORS)]
    return out


def _styles(summary: Summary) -> dict[str, dict]:
    col = colors(summary)
    styles = {name: {"color": col[name], "linewidth": 2.0, "zorder": 3} for name in summary.candidates}
    for baseline in summary.baselines:  # global ones dashed and on top: they often coincide with per-task ones
        is_global = baseline.scope == "global"
        styles[baseline.name] = {"color": col[baseline.name], "linewidth": 1.4, "zorder": 2.5 if is_global else 2,
                                 "linestyle": "--" if is_global else "-"}
    return styles


def _log_axis(ax, which: str = "y") -> None:
    """Log scale with plain tick labels (0.2, 3, 1e-05); narrow ranges also label minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_locator(LogLocator(subs=tuple(range(2, 10)), numticks=12))

    def minor(value: float, _) -> str:  # decided at draw time, when the limits are final
        low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
        if low <= 0 or high / low > 30 or value <= 0:
            return ""
        digit = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        wanted = range(2, 10) if high / low < 3 else (2, 3, 5)
        return f"{value:.3g}" if digit in wanted else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _save(fig, path: str | os.PathLike) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return str(path)


def plot_task_curves(summary: Summary, path: str | os.PathLike, *, max_columns: int = 3) -> str:
    """Learning curves of every task: training loss and test loss against inner steps.

    Args:
        summary: from :func:`lopt.evaluate.analysis.summarize`.
        path: the PNG to write.
        max_columns: subplots per row.

    Returns:
        The path written.
    """
    plt = _pyplot()
    tasks = summary.tasks
    ncols = min(max_columns, math.ceil(math.sqrt(len(tasks))))
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.7 * nrows), squeeze=False)
    styles = _styles(summary)
    handles = {}
    for ax, task in zip(axes.ravel(), tasks):
        positive = True
        for name in summary.names:
            run = task.runs[name]
            style = styles[name]
            steps = np.arange(1, run.train_loss.shape[1] + 1)
            window = max(1, run.train_loss.shape[1] // 20)
            mean = smoothed_train_loss(run)
            per_seed = np.stack([smooth(seed, window) for seed in run.train_loss])
            finite = per_seed[np.isfinite(per_seed)]
            positive &= bool(finite.size == 0 or finite.min() > 0)
            (line,) = ax.plot(steps, mean, **style)
            with np.errstate(all="ignore"):
                low, high = np.nanmin(per_seed, axis=0), np.nanmax(per_seed, axis=0)
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.12, linewidth=0)
            test = np.mean(run.test_loss, axis=0)
            ax.plot(np.maximum(run.eval_steps, 1), test, marker="o", markersize=2.5, linewidth=0.8, alpha=0.8,
                    color=style["color"], linestyle=":")
            handles[name] = line
        if positive:
            _log_axis(ax)
        ax.set_xlabel("inner step")
        ax.set_ylabel("loss")
        title = task.task.label + (f"   ({task.task.sweep[0]} = {task.task.sweep[1]:g})" if task.task.sweep else "")
        ax.set_title("\n".join(textwrap.wrap(title, 64)), fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"Learning curves, suite '{summary.suite.name}': training loss (solid: mean over "
                 f"{summary.suite.num_seeds} seeds, smoothed; band: min-max over seeds), test loss (dotted)",
                 fontsize=10)
    fig.legend(list(handles.values()), _legend_names(summary, handles), loc="lower center",
               ncol=min(6, len(handles)), fontsize=9, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.05 if nrows > 1 else 0.08, 1, 0.97))
    return _save(fig, path)


def _legend_names(summary: Summary, names) -> list[str]:
    scopes = {b.name: b.scope for b in summary.baselines}
    out = []
    for name in names:
        if name in scopes:
            out.append(f"{name} (tuned {'globally' if scopes[name] == 'global' else 'per task'})")
        else:
            out.append(name)
    return out


def plot_improvement(summary: Summary, path: str | os.PathLike) -> str:
    """Per-task improvement over each baseline (sorted) and per-task speedup, per candidate.

    Left: normalised test loss of the baseline minus the candidate's (above 0: the candidate
    is better), tasks sorted. Right: VeLO speedup on training loss (log scale; triangles mark
    tasks where the baseline never reached the candidate's loss, drawn at the lower bound).

    Returns:
        The path written.
    """
    plt = _pyplot()
    candidates = summary.candidates
    fig, axes = plt.subplots(len(candidates), 2, figsize=(12, 3.9 * len(candidates)), squeeze=False)
    col = colors(summary)
    num_steps = summary.suite.num_steps
    for row, candidate in enumerate(candidates):
        left, right = axes[row]
        comparisons = [c for c in summary.comparisons if c.candidate == candidate]
        n = len(summary.tasks)
        shown = []
        for i, comp in enumerate(comparisons):
            x = np.arange(1, n + 1) + 0.08 * (i - (len(comparisons) - 1) / 2)  # overlapping lines stay visible
            marker = _MARKERS[i % len(_MARKERS)]
            values = np.sort(comp.improvement)[::-1]
            left.plot(x, values, marker=marker, color=col[comp.baseline],
                      label=f"vs {comp.baseline}: wins {comp.win_fraction:.0%} of tasks")
            speed = np.sort(comp.speedups)[::-1]
            finite = np.isfinite(speed)
            cap = max(comp.speedup_cap, (num_steps + 1) / num_steps)
            median = format_speedup(comp.median_speedup, num_steps, round(comp.speedup_cap * num_steps))
            right.plot(x[finite], speed[finite], marker=marker, color=col[comp.baseline],
                       label=f"vs {comp.baseline}: median {median}")
            if (~finite).any():
                shown.append(cap)
                right.plot(x[~finite], np.full((~finite).sum(), cap), marker="^", linestyle="none",
                           color=col[comp.baseline], markersize=9, markeredgecolor="black")
            shown.extend(speed[finite & (speed > 0)])
        left.axhline(0.0, color="black", linewidth=0.8)
        ylim = left.get_ylim()
        left.axhspan(0, max(ylim[1], 0.05), color="#2ca02c", alpha=0.06)
        left.axhspan(min(ylim[0], -0.05), 0, color="#d62728", alpha=0.06)
        left.set_ylim(min(ylim[0], -0.05), max(ylim[1], 0.05))
        left.set_xlabel("task (sorted by improvement)")
        left.set_ylabel("improvement in normalised\ntest loss (> 0: better)")
        left.set_title(f"{candidate}: improvement over baselines", fontsize=10)
        left.grid(True, alpha=0.25)
        left.legend(fontsize=8)
        right.axhline(1.0, color="black", linewidth=0.8)
        right.set_ylim(min([0.5, *shown]) / 1.3, max([2.0, *shown]) * 1.3)
        _log_axis(right)
        right.set_xlabel("task (sorted by speedup)")
        right.set_ylabel("speedup (training loss)")
        right.set_title(f"{candidate}: speedup = steps the baseline's envelope needs / {num_steps}\n"
                        "(black-edged triangles: the baseline never got there)", fontsize=10)
        right.grid(True, which="both", alpha=0.25)
        right.legend(fontsize=8)
        for ax in (left, right):
            ax.set_xticks(np.arange(1, n + 1))
    fig.tight_layout()
    return _save(fig, path)


def plot_sweeps(summary: Summary, path: str | os.PathLike) -> str | None:
    """Final test loss against each swept variable (log axis), for every optimizer.

    Returns:
        The path written, or None if the suite sweeps nothing.
    """
    variables = summary.suite.sweep_variables()
    if not variables:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(variables), figsize=(6.2 * len(variables), 4.4), squeeze=False)
    styles = _styles(summary)
    for ax, variable in zip(axes[0], variables):
        tasks = sorted((t for t in summary.tasks if t.task.sweep and t.task.sweep[0] == variable),
                       key=lambda t: t.task.sweep[1])
        xs = np.array([t.task.sweep[1] for t in tasks], dtype=float)
        positive = True
        for name, label in zip(summary.names, _legend_names(summary, summary.names)):
            finals = np.array([t.runs[name].test_loss[:, -1] for t in tasks])  # [points, seeds]
            mean, std = finals.mean(axis=1), finals.std(axis=1)
            positive &= bool(np.all(mean[np.isfinite(mean)] > 0))
            style = {k: v for k, v in styles[name].items() if k != "zorder"}
            ax.errorbar(xs, mean, yerr=std, marker="o", markersize=4, capsize=3, label=label, **style)
        ax.set_xscale("log")
        if positive:
            _log_axis(ax)
        ax.set_xlabel(variable)
        ax.set_ylabel(f"final test loss (mean ± std over {summary.suite.num_seeds} seeds)")
        ax.set_title(f"final test loss after {summary.suite.num_steps} steps vs {variable}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_normalized(summary: Summary, path: str | os.PathLike) -> str:
    """Normalised test loss of every optimizer over the tasks (the points, their median and quartiles).

    Returns:
        The path written.
    """
    plt = _pyplot()
    names = summary.names
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(names) + 1.6))
    col = colors(summary)
    data = [[t.normalized_test[name] for t in summary.tasks] for name in names]
    rng = np.random.default_rng(0)
    for i, (name, values) in enumerate(zip(names, data), start=1):
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        ax.add_patch(_pyplot().Rectangle((q1, i - 0.25), q3 - q1, 0.5, facecolor=col[name], alpha=0.18,
                                         edgecolor=col[name]))
        ax.plot([median, median], [i - 0.25, i + 0.25], color="black", linewidth=2)
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), color=col[name], s=18, zorder=3)
    ax.set_yticks(np.arange(1, len(names) + 1), _legend_names(summary, names), fontsize=9)
    ax.set_ylim(len(names) + 0.6, 0.4)
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.axvline(1.0, color="gray", linewidth=0.6, linestyle="--")
    ax.set_xlabel("normalised final test loss (1: initial loss, 0: best baseline run; clipped to [-2, 2])")
    ax.set_title(f"suite '{summary.suite.name}': {len(summary.tasks)} tasks (dots), median (bar) and "
                 "quartiles (box); lower is better", fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)
    fig.tight_layout()
    return _save(fig, path)
