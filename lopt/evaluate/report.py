"""The evaluation report: ``report.md`` with a summary table, per-task tables and the figures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lopt.evaluate import plots, stability
from lopt.evaluate.analysis import Summary, format_speedup, summarize
from lopt.evaluate.baselines import search_description
from lopt.evaluate.results import load
from lopt.evaluate.suites import suite_description

__all__ = ["compact_hparams", "write_report"]

REPORT_NAME = "report.md"
_SHORT = {"learning_rate": "lr", "adamw_weight_decay": "wd", "l2_weight_decay": "l2", "warmup_fraction": "warmup",
          "constant_fraction": "const", "min_learning_rate_mult": "min_lr", "exponential_decay": "exp_decay",
          "linear_decay": "lin_decay", "nesterov": "nesterov"}


def compact_hparams(key: str, settings: list[str]) -> str:
    """The hyperparameters of ``key`` that vary among ``settings``, short, e.g. ``"lr=0.0193"``.

    Example:
        >>> grid = ['{"b1": 0.9, "learning_rate": 0.001}', '{"b1": 0.9, "learning_rate": 0.01}']
        >>> compact_hparams(grid[1], grid)
        'lr=0.01'
        >>> compact_hparams('{"b2": 0.99995}', ['{"b2": 0.99995}', '{"b2": 0.9}'])
        'b2=1-5e-05'
    """
    values = json.loads(key)
    parsed = [json.loads(s) for s in settings]
    varying = [k for k in sorted(values) if len({json.dumps(p.get(k)) for p in parsed}) > 1] or sorted(values)
    parts = []
    for k in varying:
        v = values[k]
        if isinstance(v, bool):
            text = str(v).lower()
        elif 0.99 < v < 1.0:  # decays near 1 (b2 = 0.99995) read better as 1 - x
            text = f"1-{1.0 - v:.2g}"
        else:
            text = f"{v:.3g}"
        parts.append(f"{_SHORT.get(k, k)}={text}")
    return " ".join(parts)


def _num(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "diverged"
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _describe_optimizer(label: str, info: dict) -> str:
    source = info.get("source") or {}
    if info["kind"] == "learned":
        where = source.get("checkpoint") or source.get("theta", "")
        return (f"`{label}`: learned optimizer `{source.get('architecture', info['name'])}` "
                f"(theta {source.get('theta_sha256', '?')}{', ' + where if where else ''})")
    if info["kind"] == "optax":
        return f"`{label}`: optax.{info['name']} {info['settings'][0]}"
    return f"`{label}`: lopt baseline `{info['name']}` {info['settings'][0]}"


def _settings_text(header: dict, label: str, steps: int) -> str:
    info = header["optimizers"][label]
    longer = info.get("num_steps")
    extra = f", {longer} steps = {longer / steps:g}x the suite" if longer and longer != steps else ""
    return f"{len(info['settings'])} settings{extra}"


def _chosen_text(baseline, search: str, key: str, header: dict) -> str:
    text = compact_hparams(key, header["optimizers"][search]["settings"])
    return f"{search}: {text}" if baseline.extra_runs else text


def _improvement_text(stats) -> str:
    low, high = stats.median_ci
    return f"[{low:+.3f}, {high:+.3f}]; {stats.iqm:+.3f}"


def _speedup_texts(comparison, steps: int) -> list[str]:
    stats = comparison.speedup_stats
    bound = ">= " if stats.is_lower_bound else ""
    baseline_steps = round(comparison.speedup_cap * steps)
    median = format_speedup(comparison.median_speedup, steps, baseline_steps)
    if math.isfinite(comparison.median_speedup) and stats.is_lower_bound:
        median = f">= {median}"
    low, high = stats.median_ci
    iqm_low, iqm_high = stats.iqm_ci
    return [median, f"[{bound}{low:.2f}, {bound}{high:.2f}] ({stats.q25:.2f}-{stats.q75:.2f})",
            f"{bound}{stats.iqm:.2f}x [{bound}{iqm_low:.2f}, {bound}{iqm_high:.2f}]"]


def _markdown(summary: Summary, figures: dict[str, str | None], unstable: list[dict] = ()) -> str:
    suite = summary.suite
    flagged = {(r["task"], r["optimizer"]): r for r in unstable}

    def mark(task: str, name: str) -> str:  # a blown-up or diverged cell of the per-task tables
        r = flagged.get((task, name))
        if r is None:
            return ""
        what = [f"{r[k]}/{r['seeds']} {k.replace('_', ' ')}" for k in ("blew_up", "diverged") if r[k]]
        return " ⚠ " + ", ".join(what)

    header = summary.header
    steps = suite.num_steps
    lines = [f"# Evaluation on suite `{suite.name}`", ""]
    count = len(suite.tuning_tasks)
    tuning = (f"chosen on {count} tuning task{'s' if count != 1 else ''} sampled from the training family "
              f"`{dict(suite.options).get('family', 'mlp')}`" if suite.tuning_tasks else
              "each task's setting chosen on the suite's other tasks (leave-one-out)")
    quick = " (quick mode: tiny tasks on digits)" if dict(suite.options).get("quick") else ""
    lines += [(f"Suite `{suite.name}`: {suite_description(suite.name)}{quick}. {len(suite.tasks)} tasks, "
              f"{steps} inner steps, {suite.num_seeds} seeds (the same initial params and batches for every "
              f"optimizer), valid/test evaluated every {suite.eval_every} steps. Global baselines: {tuning}."), ""]
    lines += ["Optimizers evaluated:", ""]
    lines += [f"- {_describe_optimizer(label, header['optimizers'][label])}" for label in summary.candidates]
    lines += ["", "Baselines (selection always on the validation loss at the end of training, mean over seeds):", ""]
    lines += [f"- `{b.name}`: {b.description} — runs: "
              + " + ".join(f"{search_description(r)} ({_settings_text(header, r, steps)})" for r in b.searches)
              for b in summary.baselines]
    if summary.missing:
        lines += ["", (f"**Incomplete:** {summary.missing} baseline runs are missing from the results; re-run "
                  "`lopt eval` with the same arguments to finish them.")]
    lines += ["", "## Summary", ""]
    if summary.comparisons:
        rows = [[f"`{c.candidate}`", f"`{c.baseline}`", f"{c.win_fraction:.2f}",
                 f"{c.median_normalized_candidate:.3f} / {c.median_normalized_baseline:.3f}",
                 f"{c.median_improvement:+.3f}", *_speedup_texts(c, steps), _improvement_text(c.improvement_stats)]
                for c in summary.comparisons]
        lines += _table(["optimizer", "baseline", "win fraction", ("median normalised test loss (optimizer / "
                         "baseline)"), "median improvement", "median speedup",
                         "speedup: 95% CI of the median (IQR)", "IQM speedup [95% CI]",
                         "improvement: 95% CI of the median; IQM"], rows)
        lines += ["", ("- *win fraction*: share of tasks where the optimizer's final **test** loss (mean over seeds) "
                  "is lower than the tuned baseline's (ties count one half)."),
                  ("- *normalised test loss*: 1 is the loss at initialisation, 0 the lowest test loss any baseline run "
                  "reached on the task (TaskSet normalisation, clipped to [-2, 2], diverged = 2)."),
                  ("- *improvement*: the baseline's normalised test loss minus the optimizer's (> 0: the optimizer "
                  "is better)."),
                  ("- *speedup* (VeLO): steps the baseline's per-step lower envelope of **training** loss (over its "
                  "whole search for per-task baselines, its one setting for global ones) needs to reach the "
                  f"optimizer's final training loss (mean of the last 5% of steps), divided by {steps}. Baselines "
                  "whose search ran longer than the suite (the Adam grid with `--baseline-steps-factor F`) measure "
                  f"speedups up to F; `> F.00x`: the baseline never got there within F x {steps} steps, and the "
                  "aggregates count such a task as F (so they are lower bounds, marked `>=`)."),
                  ("- *[95% CI]*: percentile bootstrap over tasks (2,000 resamples); *IQR*: 25th-75th percentile; "
                  "*IQM*: interquartile mean, the mean of the middle 50% of tasks (rliable).")]
    else:
        lines += ["No candidate-versus-baseline comparisons (no candidates or no baselines)."]
    lines += [""] + stability.markdown_lines(list(unstable), len(summary.tasks) * len(summary.names))
    lines += ["## Figures", ""]
    captions = {"curves": "Learning curves per task", "improvement": "Improvement over the baselines and speedups",
                "sweeps": "Out-of-distribution sweeps", "normalized": "Normalised test loss over tasks"}
    for key, file in figures.items():
        if file:
            lines += [f"### {captions[key]}", "", f"![{captions[key]}]({os.path.basename(file)})", ""]
    lines += ["## Per task", "", "Final test loss (mean over seeds); normalised in parentheses.", ""]
    names = summary.names
    rows = []
    for t in summary.tasks:
        rows.append([t.task.label] + [f"{_num(t.final_test[n])} ({t.normalized_test[n]:.2f}){mark(t.task.label, n)}"
                                      for n in names])
    lines += _table(["task"] + [f"`{n}`" for n in names], rows)
    lines += ["", "Final training loss (mean of the last 5% of steps, mean over seeds).", ""]
    rows = [[t.task.label] + [_num(t.final_train[n]) + mark(t.task.label, n) for n in names] for t in summary.tasks]
    lines += _table(["task"] + [f"`{n}`" for n in names], rows)
    if summary.candidates and summary.baselines:
        lines += ["", "Speedup (training loss) of each optimizer over each baseline.", ""]
        pairs = [(c, b.name) for c in summary.candidates for b in summary.baselines]
        rows = [[t.task.label] + [format_speedup(t.speedup(c, b), steps, t.baseline_steps(b)) for c, b in pairs]
                for t in summary.tasks]
        lines += _table(["task"] + [f"`{c}` vs `{b}`" for c, b in pairs], rows)
    if summary.baselines:
        lines += ["", "## Chosen baseline settings", ""]
        rows = []
        for t in summary.tasks:
            rows.append([t.task.label] + [
                _chosen_text(b, t.chosen_search[b.name], t.chosen[b.name], header) for b in summary.baselines])
        lines += _table(["task"] + [f"`{b.name}`" for b in summary.baselines], rows)
    if suite.tuning_tasks:
        lines += ["", "Tuning tasks: " + "; ".join(t.label for t in suite.tuning_tasks) + "."]
    versions = header.get("versions", {})
    lines += ["", "## Files", "",
              ("- `results.csv`: one row per task x optimizer x hyperparameters x seed x step (train loss every "
              "step; valid/test loss and accuracy at evaluation steps)."),
              ("- `results.json`: the suite (every task config), the optimizers and searches, library versions "
              f"({', '.join(f'{k} {v}' for k, v in versions.items())})."),
              "- `stability.json`: the runs that blew up or diverged, seeds counted (the Stability section).", ""]
    return "\n".join(lines)


def write_report(results_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Writes ``report.md``, its PNGs and ``stability.json`` (runs that blew up or diverged) for a results directory.

    Args:
        results_dir: a directory written by :func:`lopt.evaluate.evaluate` (or ``combine``).
        out: where to write the report (default: ``results_dir``).

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: not a results directory.
        ValueError: the evaluation is unfinished (some optimizer has no runs on a task).
    """
    summary = summarize(load(results_dir))
    out = Path(out or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str | None] = {"curves": plots.plot_task_curves(summary, out / "learning_curves.png")}
    if summary.comparisons:
        figures["improvement"] = plots.plot_improvement(summary, out / "improvement.png")
    figures["sweeps"] = plots.plot_sweeps(summary, out / "ood_sweeps.png")
    figures["normalized"] = plots.plot_normalized(summary, out / "normalized_losses.png")
    _, unstable = stability.write_stability(summary, out)
    path = out / REPORT_NAME
    path.write_text(_markdown(summary, figures, unstable))
    return path
