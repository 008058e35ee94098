"""Speedups past 1x: baseline searches run longer than the candidate, on hand-built curves."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lopt.evaluate import Results, Run, Suite, make_suite
from lopt.evaluate.analysis import format_speedup, summarize
from lopt.evaluate.results import make_header

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import tiny_suite

STEPS, FACTOR, SEEDS = 40, 4, 2
GRID = ['{"learning_rate": 0.001}', '{"learning_rate": 0.01}']
CAND = "{}"


def _run(rate: float, steps: int, valid_final: float) -> Run:
    """Train loss ``1 / (1 + rate t)``: a curve with rate ``r`` reaches a loss in ``1 / r`` as many steps."""
    train = np.tile(1.0 / (1.0 + rate * np.arange(1, steps + 1)), (SEEDS, 1))
    eval_steps = np.arange(0, steps + 1, 10)
    valid = np.tile(np.linspace(1.0, valid_final, eval_steps.size), (SEEDS, 1))
    return Run(np.arange(SEEDS), train, eval_steps, valid, np.full_like(valid, np.nan), valid.copy(),
               np.full_like(valid, np.nan))


@pytest.fixture(scope="module")
def summary():
    suite = make_suite("quick", num_steps=STEPS, num_seeds=SEEDS, eval_every=10, num_tuning_tasks=0)
    a, b = suite.tasks
    grid_info = {"kind": "baseline", "name": "adam", "role": "baseline", "settings": GRID, "source": {},
                 "num_steps": STEPS * FACTOR}
    header = make_header(suite.to_dict(), {
        "cand": {"kind": "baseline", "name": "adam", "role": "candidate", "settings": [CAND], "source": {}},
        "adam_lr_grid": grid_info}, ["adam_per_task"])
    long = STEPS * FACTOR
    runs = {
        # task a: the candidate (rate 3) is 3x faster than the best grid curve (rate 1): speedup 3
        (a.id, "adam_lr_grid", GRID[0]): _run(0.2, long, 0.9),
        (a.id, "adam_lr_grid", GRID[1]): _run(1.0, long, 0.5),
        (a.id, "cand", CAND): _run(3.0, STEPS, 0.3),
        # task b: 8x faster: the 4x-longer grid never gets there, a lower bound of 4
        (b.id, "adam_lr_grid", GRID[0]): _run(1.0, long, 0.5),
        (b.id, "adam_lr_grid", GRID[1]): _run(0.1, long, 0.9),
        (b.id, "cand", CAND): _run(8.0, STEPS, 0.3),
    }
    return summarize(Results(header, runs))


def test_speedup_is_measured_past_one_and_capped_as_a_lower_bound(summary):
    comparison = summary.comparisons[0]
    # smoothing (window 5% of 40 = 2) shifts both curves alike; the exact ratio is recovered
    assert comparison.speedups[0] == pytest.approx(3.0, rel=0.02)
    assert comparison.speedups[1] == math.inf
    assert comparison.speedup_cap == FACTOR
    a = summary.tasks[0]
    assert a.baseline_steps("adam_per_task") == STEPS * FACTOR
    assert format_speedup(comparison.speedups[1], STEPS, a.baseline_steps("adam_per_task")) == "> 4.00x"
    stats = comparison.speedup_stats
    assert stats.is_lower_bound and stats.num_capped == 1
    assert stats.median == pytest.approx((comparison.speedups[0] + 4.0) / 2)


def test_selection_and_final_losses_use_the_suite_horizon(summary):
    a, _ = summary.tasks
    run = a.runs["adam_per_task"]
    assert run.train_loss.shape == (SEEDS, STEPS) and run.eval_steps[-1] == STEPS
    assert a.chosen["adam_per_task"] == GRID[1]
    # the final test loss is read at step 40 of the 160-step run, not at its end (0.5)
    expected = np.linspace(1.0, 0.5, 17)[4]
    assert a.final_test["adam_per_task"] == pytest.approx(expected)


def test_run_prefix_needs_an_evaluation_at_the_horizon():
    run = _run(1.0, 40, 0.5)
    with pytest.raises(ValueError, match="eval_every that divides"):
        run.prefix(15)
    assert run.prefix(20).train_loss.shape == (SEEDS, 20)


def test_a_longer_adam_grid_starts_exactly_like_the_short_one(tmp_path):
    from lopt.evaluate import evaluate, load, resolve
    from lopt.evaluate.curves import load as load_curves

    suite = tiny_suite(num_tasks=1, num_steps=8, num_seeds=1)
    kwargs = {"baselines": "adam_per_task", "grid_size": 2}
    short = load(evaluate(suite, [resolve("sgd:learning_rate=0.05")], tmp_path / "short", **kwargs))
    long_dir = evaluate(suite, [resolve("sgd:learning_rate=0.05")], tmp_path / "long", baseline_steps_factor=3,
                        **kwargs)
    longer = load(long_dir)
    assert longer.header["optimizers"]["adam_lr_grid"]["num_steps"] == 24
    assert "num_steps" not in longer.header["optimizers"]["sgd:learning_rate=0.05"]
    for key, run in short.runs.items():
        long_run = longer.runs[key]
        if key[1] == "adam_lr_grid":
            assert long_run.num_steps == 24
            cut = long_run.prefix(8)
            np.testing.assert_allclose(cut.train_loss, run.train_loss, rtol=1e-6)
            np.testing.assert_allclose(cut.valid_loss, run.valid_loss, rtol=1e-6)
        else:
            np.testing.assert_array_equal(long_run.train_loss, run.train_loss)
    # every run also went into the curve dataset, with its own horizon
    table = load_curves(tmp_path / "long" / "curves")
    assert sorted(table["num_steps"].tolist()) == [8, 24, 24]
    assert set(table["optimizer"].tolist()) == {"adam_lr_grid", "sgd:learning_rate=0.05"}
    odd = Suite("odd", suite.tasks, (), 8, 1, 3)  # 8 steps, evaluated every 3: no evaluation at step 8
    with pytest.raises(ValueError, match="pass eval_every=2"):
        evaluate(odd, [resolve("sgd")], tmp_path / "odd", baseline_steps_factor=2, **kwargs)
