"""Evaluation: train optimizers on suites of tasks against tuned baselines, and report.

Example:
    >>> import tempfile
    >>> import lopt.evaluate as ev
    >>> suite = ev.make_suite("quick", num_steps=20)
    >>> out = ev.evaluate(suite, [ev.resolve("adam")], tempfile.mkdtemp(), baselines="adam_per_task",
    ...                   grid_size=3)
    >>> results = ev.load(out)
"""

from lopt.evaluate.baselines import (
    DEFAULT_BASELINES,
    Baseline,
    baseline_names,
    get_baseline,
    parse_baselines,
    search_spec,
)
from lopt.evaluate.optimizer_spec import OptimizerFactory, OptimizerSpec, hparams_key, resolve
from lopt.evaluate.results import Results, ResultsWriter, Run, combine, load, read_header
from lopt.evaluate.runner import Job, evaluate, optimizer_specs, plan, seed_keys, train_cells
from lopt.evaluate.suites import Suite, SuiteTask, make_suite, suite_names, task_label

__all__ = [
    "DEFAULT_BASELINES",
    "Baseline",
    "Job",
    "OptimizerFactory",
    "OptimizerSpec",
    "Results",
    "ResultsWriter",
    "Run",
    "Suite",
    "SuiteTask",
    "baseline_names",
    "combine",
    "evaluate",
    "get_baseline",
    "hparams_key",
    "load",
    "make_suite",
    "optimizer_specs",
    "parse_baselines",
    "plan",
    "read_header",
    "resolve",
    "search_spec",
    "seed_keys",
    "suite_names",
    "task_label",
    "train_cells",
]
