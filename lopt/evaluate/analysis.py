"""From results to numbers: select the baselines' settings, normalise, compare, and summarise.

:func:`summarize` turns a loaded results directory into a :class:`Summary`:

* each baseline's chosen setting per task, selected on the **validation** loss (final
  evaluation, mean over seeds): per task among its search's settings, or one global setting
  chosen on the tuning tasks (:func:`lopt.evaluate.metrics.select_global`);
* final losses of every candidate and chosen baseline: **test** loss at the last evaluation
  and **training** loss averaged over the last 5% of steps, both means over seeds;
* task-normalised losses (``initial -> 1``, best baseline run ``-> 0``; see
  :func:`lopt.meta.normalizer.normalize_loss`);
* for every candidate and baseline: win fraction and median improvement (on normalised test
  loss), and the VeLO speedup on the training loss against the baseline's per-step lower
  envelope over its settings (per-task baselines: all settings; global ones: the chosen one);
* robust aggregates over tasks (:mod:`lopt.evaluate.statistics`): median with IQR, interquartile
  mean, and bootstrap 95% confidence intervals of both, for the speedup and the improvement.

Baseline searches run longer than the suite (``baseline_steps_factor``) are cut to the suite's
horizon (:meth:`Run.prefix`) for selection, final losses and normalisers; only the speedup
envelope uses their full length, so a candidate up to ``factor`` times faster than tuned Adam
gets a number, and one faster still is reported as a lower bound (``> 4.00x``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from lopt.evaluate import metrics
from lopt.evaluate.baselines import Baseline, get_baseline
from lopt.evaluate.results import Results, Run
from lopt.evaluate.statistics import Aggregate, aggregate
from lopt.evaluate.suites import Suite, SuiteTask
from lopt.plotting import smooth

__all__ = ["Comparison", "Summary", "TaskSummary", "final_test_loss", "final_train_loss", "final_valid_loss",
           "format_speedup", "smoothed_train_loss", "summarize"]


def format_speedup(value: float, num_steps: int, baseline_steps: int | None = None) -> str:
    """``"1.23x"``, ``"0.004x"`` (two significant digits below 0.1), ``"> 4.00x"`` when never reached.

    Args:
        value: the speedup (``inf``: the baseline never reached the candidate's loss).
        num_steps: the candidate's steps.
        baseline_steps: the baseline's steps (default ``num_steps``): ``inf`` means the speedup
            exceeds ``baseline_steps / num_steps``.

    Example:
        >>> format_speedup(0.0042, 500), format_speedup(float("inf"), 500), format_speedup(2.5, 500)
        ('0.0042x', '> 1.00x', '2.50x')
        >>> format_speedup(float("inf"), 500, baseline_steps=2000)
        '> 4.00x'
    """
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return f"> {(baseline_steps or num_steps) / num_steps:.2f}x"
    return f"{value:.2g}x" if value < 0.1 else f"{value:.2f}x"


def _window(num_steps: int) -> int:
    return max(1, num_steps // 20)


def _seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 0); a diverged seed (NaN) makes the mean NaN: divergence is not hidden."""
    return np.mean(values, axis=0)


def final_valid_loss(run: Run) -> float:
    """Validation loss at the last evaluation, mean over seeds (NaN if a seed diverged)."""
    return float(_seed_mean(run.valid_loss[:, -1]))


def final_test_loss(run: Run) -> float:
    """Test loss at the last evaluation, mean over seeds (NaN if a seed diverged)."""
    return float(_seed_mean(run.test_loss[:, -1]))


def smoothed_train_loss(run: Run, window: int | None = None) -> np.ndarray:
    """Training loss, mean over seeds, trailing average over ``window`` steps (default 5% of the run)."""
    curve = _seed_mean(run.train_loss)
    return smooth(curve, window or _window(curve.size))


def final_train_loss(run: Run) -> float:
    """Training loss of the last 5% of steps, mean over seeds (the end of :func:`smoothed_train_loss`)."""
    curve = _seed_mean(run.train_loss)
    tail = curve[-_window(curve.size):]
    return float(np.mean(tail))


@dataclasses.dataclass
class TaskSummary:
    """Everything the report says about one task.

    Attributes:
        task: the suite task.
        runs: the run of every candidate and the chosen run of every baseline, by name.
        chosen: the chosen hyperparameters (JSON) of every baseline, by name.
        chosen_search: the search (runs label) the chosen setting belongs to, by baseline name.
        envelope_runs: every baseline's runs its speedup envelope is taken over (full length:
            longer than the suite for a search run with ``baseline_steps_factor``).
        initial_test, best_test, initial_train, best_train: the normalisers.
        final_test, final_train: by name (means over seeds).
        normalized_test, normalized_train: by name.
    """

    task: SuiteTask
    runs: dict[str, Run]
    chosen: dict[str, str]
    chosen_search: dict[str, str]
    envelope_runs: dict[str, list[Run]]
    initial_test: float
    best_test: float
    initial_train: float
    best_train: float
    final_test: dict[str, float] = dataclasses.field(default_factory=dict)
    final_train: dict[str, float] = dataclasses.field(default_factory=dict)
    normalized_test: dict[str, float] = dataclasses.field(default_factory=dict)
    normalized_train: dict[str, float] = dataclasses.field(default_factory=dict)

    def speedup(self, candidate: str, baseline: str) -> float:
        """VeLO speedup of ``candidate`` over ``baseline``'s envelope, on training loss.

        Both curves are smoothed over the same window (5% of the candidate's horizon); ``inf``
        means the envelope never reached the candidate's final loss in
        :meth:`baseline_steps` steps.
        """
        window = _window(self.runs[candidate].num_steps)
        return metrics.speedup(smoothed_train_loss(self.runs[candidate], window),
                               [smoothed_train_loss(r, window) for r in self.envelope_runs[baseline]])

    def baseline_steps(self, baseline: str) -> int:
        """Steps of ``baseline``'s envelope runs (the suite's horizon unless run longer)."""
        return min(r.num_steps for r in self.envelope_runs[baseline])


@dataclasses.dataclass
class Comparison:
    """One candidate against one baseline over the suite's tasks.

    Attributes:
        candidate, baseline: the names.
        win_fraction: tasks where the candidate's final test loss is lower (ties half).
        median_normalized_candidate, median_normalized_baseline: median normalised test loss.
        improvement: per task, normalised test loss of the baseline minus the candidate's.
        speedups: per task, VeLO speedup on training loss (``inf``: the baseline never got there).
        speedup_cap: what ``inf`` stands for: the baseline's steps over the candidate's (a speedup
            above it cannot be measured).
    """

    candidate: str
    baseline: str
    win_fraction: float
    median_normalized_candidate: float
    median_normalized_baseline: float
    improvement: np.ndarray
    speedups: np.ndarray
    speedup_cap: float = 1.0

    @property
    def speedup_stats(self) -> Aggregate:
        """Median (IQR), IQM and bootstrap 95% CIs of the speedups; ``inf`` counted as the cap."""
        return aggregate(self.speedups, cap=self.speedup_cap)

    @property
    def improvement_stats(self) -> Aggregate:
        """Median (IQR), IQM and bootstrap 95% CIs of the improvement."""
        return aggregate(self.improvement)

    @property
    def median_improvement(self) -> float:
        """Median of :attr:`improvement`."""
        return metrics.median(self.improvement)

    @property
    def median_speedup(self) -> float:
        """Median of :attr:`speedups` (``inf`` if most tasks were never reached by the baseline)."""
        return metrics.median(self.speedups)


@dataclasses.dataclass
class Summary:
    """The analysed evaluation.

    Attributes:
        header: the results header.
        suite: the suite.
        candidates: candidate labels.
        baselines: the baselines.
        tasks: one :class:`TaskSummary` per suite task.
        comparisons: one :class:`Comparison` per (candidate, baseline).
        missing: runs listed in the header but absent from the results (an unfinished evaluation).
    """

    header: dict[str, Any]
    suite: Suite
    candidates: list[str]
    baselines: list[Baseline]
    tasks: list[TaskSummary]
    comparisons: list[Comparison]
    missing: int

    @property
    def names(self) -> list[str]:
        """Candidates then baselines: every name that has a run per task."""
        return self.candidates + [b.name for b in self.baselines]


def _search_runs(results: Results, task: SuiteTask, label: str) -> list[tuple[str, Run | None]]:
    settings = results.header["optimizers"][label]["settings"]
    return [(key, results.run(task.id, label, key)) for key in settings]


def _at_suite_horizon(run: Run, suite: Suite) -> Run:
    return run.prefix(suite.num_steps) if run.num_steps > suite.num_steps else run


def _initial(runs: list[Run], field: str) -> float:
    values = [float(np.mean(getattr(r, field)[:, 0])) for r in runs]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _best(runs: list[Run]) -> tuple[float, float]:
    tests = [np.nanmin(_seed_mean(r.test_loss)) for r in runs if np.isfinite(_seed_mean(r.test_loss)).any()]
    trains = [np.nanmin(smoothed_train_loss(r)) for r in runs if np.isfinite(smoothed_train_loss(r)).any()]
    return (float(min(tests)) if tests else math.nan, float(min(trains)) if trains else math.nan)


def _global_choice(results: Results, baseline: Baseline, tuning: list[SuiteTask], suite: Suite) -> str:
    """The setting of ``baseline`` with the best mean normalised validation loss on ``tuning``."""
    settings = results.header["optimizers"][baseline.runs]["settings"]
    table, initial = [], []
    for task in tuning:
        runs = [results.run(task.id, baseline.runs, key) for key in settings]
        if any(r is None for r in runs):
            continue
        runs = [_at_suite_horizon(r, suite) for r in runs]
        table.append([final_valid_loss(r) for r in runs])
        initial.append(_initial(runs, "valid_loss"))
    if not table:
        raise ValueError(f"baseline {baseline.name} has no complete runs on its tuning tasks; run the evaluation "
                         "to the end (re-running `lopt eval` resumes it).")
    return settings[metrics.select_global(table, initial)]


def summarize(results: Results) -> Summary:
    """Selects the baselines' settings on validation loss and computes every reported number.

    Args:
        results: from :func:`lopt.evaluate.load`.

    Returns:
        The :class:`Summary`.

    Raises:
        ValueError: if a candidate or baseline has no runs on some task (an unfinished evaluation).
    """
    header = results.header
    suite = Suite.from_dict(header["suite"])
    candidates = [label for label, info in header["optimizers"].items() if info["role"] == "candidate"]
    baselines = [get_baseline(name) for name in header["baselines"]]
    missing = 0
    fixed_global: dict[str, str] = {}
    if suite.tuning_tasks:
        fixed_global = {b.name: _global_choice(results, b, list(suite.tuning_tasks), suite)
                        for b in baselines if b.scope == "global"}
    task_summaries = []
    for task in suite.tasks:
        runs: dict[str, Run] = {}
        for label in candidates:
            run = results.run(task.id, label, header["optimizers"][label]["settings"][0])
            if run is None:
                raise ValueError(f"{label} has no finished runs on task {task.label}; finish the evaluation first "
                                 "(re-running `lopt eval` with the same arguments resumes it).")
            runs[label] = run
        chosen, chosen_search, envelope_runs, all_baseline_runs = {}, {}, {}, []
        for baseline in baselines:
            found = [(label, k, r) for label in baseline.searches for k, r in _search_runs(results, task, label)
                     if r is not None]
            missing += sum(len(header["optimizers"][label]["settings"]) for label in baseline.searches) - len(found)
            if not found:
                raise ValueError(f"baseline {baseline.name} has no finished runs on task {task.label}; finish the "
                                 "evaluation first (re-running `lopt eval` resumes it).")
            cut = {(label, k): _at_suite_horizon(r, suite) for label, k, r in found}
            all_baseline_runs.extend(cut.values())
            if baseline.scope == "per_task":
                index = metrics.select_per_task([final_valid_loss(r) for r in cut.values()])
                label, key = list(cut)[index]
                envelope_runs[baseline.name] = [r for _, _, r in found]
            else:
                label = baseline.runs
                key = fixed_global.get(baseline.name) or _global_choice(
                    results, baseline, [t for t in suite.tasks if t.id != task.id], suite)
                envelope_runs[baseline.name] = [r for lb, k, r in found if (lb, k) == (label, key)]
                if not envelope_runs[baseline.name]:
                    raise ValueError(f"baseline {baseline.name}'s chosen setting {key} has no run on {task.label}.")
            chosen[baseline.name] = key
            chosen_search[baseline.name] = label
            runs[baseline.name] = cut[(label, key)]
        reference = all_baseline_runs or list(runs.values())
        best_test, best_train = _best(reference)
        summary = TaskSummary(task, runs, chosen, chosen_search, envelope_runs,
                              initial_test=_initial(list(runs.values()) + reference, "test_loss"),
                              best_test=best_test, initial_train=_initial(list(runs.values()) + reference,
                                                                          "train_loss"),
                              best_train=best_train)
        for name, run in runs.items():
            summary.final_test[name] = final_test_loss(run)
            summary.final_train[name] = final_train_loss(run)
            summary.normalized_test[name] = float(metrics.normalized(summary.final_test[name], summary.initial_test,
                                                                     summary.best_test))
            summary.normalized_train[name] = float(metrics.normalized(summary.final_train[name],
                                                                      summary.initial_train, summary.best_train))
        task_summaries.append(summary)
    comparisons = []
    for candidate in candidates:
        for baseline in baselines:
            cand = [t.normalized_test[candidate] for t in task_summaries]
            base = [t.normalized_test[baseline.name] for t in task_summaries]
            comparisons.append(Comparison(
                candidate, baseline.name,
                win_fraction=metrics.win_fraction([t.final_test[candidate] for t in task_summaries],
                                                  [t.final_test[baseline.name] for t in task_summaries]),
                median_normalized_candidate=metrics.median(cand),
                median_normalized_baseline=metrics.median(base),
                improvement=metrics.improvement(cand, base),
                speedups=np.array([t.speedup(candidate, baseline.name) for t in task_summaries]),
                speedup_cap=min(t.baseline_steps(baseline.name) for t in task_summaries) / suite.num_steps))
    return Summary(header, suite, candidates, baselines, task_summaries, comparisons, missing)
