"""The opt_list rungs of the baseline ladder, end to end on tiny quadratics; docstring examples."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from lopt.evaluate import (
    evaluate,
    get_baseline,
    load,
    parse_baselines,
    resolve,
    search_spec,
    summarize,
)
from lopt.evaluate.analysis import final_valid_loss
from lopt.evaluate.report import write_report
from lopt.optimizers import opt_list

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import tiny_suite


def test_opt_list_search_spec_is_the_first_k_settings():
    spec = search_spec("opt_list", opt_list_trials=4)
    assert [dict(s) for s in spec.settings] == [
        {k: (v if isinstance(v, bool) else pytest.approx(v, rel=1e-6)) for k, v in s.items()} for s in opt_list(4)]
    assert spec.factory.name == "nadamw" and spec.source == {"opt_list": "opt_list(4)"}
    with pytest.raises(ValueError, match="k=1000"):
        search_spec("opt_list", opt_list_trials=1000)
    with pytest.raises(ValueError, match="horizon-dependent"):
        search_spec("opt_list", num_steps=100)
    assert get_baseline("adam8p_opt_list_per_task").searches == ("adam8p_search", "opt_list")
    assert [b.name for b in parse_baselines("all")][-2:] == ["opt_list_per_task", "adam8p_opt_list_per_task"]


def test_union_rung_picks_the_best_of_both_searches(tmp_path):
    suite = tiny_suite(num_tasks=2, num_steps=10, num_seeds=1)
    out = evaluate(suite, [resolve("sgd:learning_rate=0.05")], tmp_path,
                   baselines="adam8p_per_task,opt_list_per_task,adam8p_opt_list_per_task", num_trials=3,
                   opt_list_trials=3)
    results = load(out)
    summary = summarize(results)
    for task in summary.tasks:
        valid = {name: final_valid_loss(task.runs[name]) for name in task.runs}
        assert valid["adam8p_opt_list_per_task"] == pytest.approx(
            min(valid["adam8p_per_task"], valid["opt_list_per_task"]))
        assert task.chosen_search["adam8p_opt_list_per_task"] in ("adam8p_search", "opt_list")
        assert len(task.envelope_runs["adam8p_opt_list_per_task"]) == 6  # 3 + 3 trials
    text = write_report(out).read_text()
    chosen_in = summary.tasks[0].chosen_search["adam8p_opt_list_per_task"]
    assert "`adam8p_opt_list_per_task`" in text and f"| {chosen_in}: " in text  # the setting names its search
    assert summary.missing == 0 and np.isfinite([c.win_fraction for c in summary.comparisons]).all()


@pytest.mark.parametrize("name", ["lopt.evaluate.curves", "lopt.evaluate.statistics", "lopt.optimizers.opt_list"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_docstring_example_that_learns_a_list():
    result = doctest.testmod(importlib.import_module("lopt.evaluate.opt_list_search"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
