"""Evaluation: train optimizers on suites of tasks against tuned baselines, and report.

Example:
    >>> import tempfile
    >>> import lopt.evaluate as ev
    >>> suite = ev.make_suite("quick", num_tasks=1, num_steps=20)
    >>> out = ev.evaluate(suite, [ev.resolve("adam")], tempfile.mkdtemp(), baselines="adam_per_task",
    ...                   grid_size=3)
    >>> summary = ev.summarize(ev.load(out))
    >>> [c.baseline for c in summary.comparisons]
    ['adam_per_task']
    >>> report = ev.write_report(out)  # report.md and its PNGs
"""

from lopt.evaluate import analysis, curves, metrics, plots, report, statistics
from lopt.evaluate.analysis import Summary, summarize
from lopt.evaluate.baselines import (
    DEFAULT_BASELINES,
    Baseline,
    baseline_names,
    get_baseline,
    parse_baselines,
    search_spec,
)
from lopt.evaluate.opt_list_search import OptListSearch, learn_opt_list
from lopt.evaluate.optimizer_spec import OptimizerFactory, OptimizerSpec, hparams_key, resolve
from lopt.evaluate.report import write_report
from lopt.evaluate.results import Results, ResultsWriter, Run, combine, load, read_header
from lopt.evaluate.runner import Job, evaluate, optimizer_specs, plan, seed_keys, train_cells
from lopt.evaluate.suites import Suite, SuiteTask, make_suite, suite_names, task_label

__all__ = [
    "DEFAULT_BASELINES",
    "Baseline",
    "Job",
    "OptListSearch",
    "OptimizerFactory",
    "OptimizerSpec",
    "Results",
    "ResultsWriter",
    "Run",
    "Suite",
    "SuiteTask",
    "Summary",
    "analysis",
    "baseline_names",
    "combine",
    "curves",
    "evaluate",
    "get_baseline",
    "hparams_key",
    "learn_opt_list",
    "load",
    "make_suite",
    "metrics",
    "optimizer_specs",
    "parse_baselines",
    "plan",
    "plots",
    "read_header",
    "report",
    "resolve",
    "search_spec",
    "seed_keys",
    "statistics",
    "suite_names",
    "summarize",
    "task_label",
    "train_cells",
    "write_report",
]
