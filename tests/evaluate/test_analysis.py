"""summarize() on hand-built results with known answers: selection, normalisation, comparisons."""

import math

import numpy as np
import pytest

from lopt.evaluate import Results, Run, make_suite
from lopt.evaluate.analysis import final_train_loss, summarize
from lopt.evaluate.results import make_header

STEPS, SEEDS = 20, 2
EVAL_STEPS = np.array([0, 10, 20])
GRID = ['{"learning_rate": 0.001}', '{"learning_rate": 0.01}', '{"learning_rate": 0.1}']
CAND = '{"learning_rate": 0.003}'


def _run(train_rate, valid_final, test_curve, *, initial=2.0, seeds=SEEDS):
    """Train loss ``initial / (1 + rate t)`` for every seed; valid ends at ``valid_final``."""
    train = np.tile(initial / (1.0 + train_rate * np.arange(1, STEPS + 1)), (seeds, 1))
    valid = np.tile([initial, (initial + valid_final) / 2, valid_final], (seeds, 1))
    test = np.tile(test_curve, (seeds, 1)).astype(float)
    return Run(np.arange(seeds), train, EVAL_STEPS, valid, np.full_like(valid, np.nan), test,
               np.full_like(test, np.nan))


@pytest.fixture(scope="module")
def results():
    suite = make_suite("quick", num_steps=STEPS, num_seeds=SEEDS, eval_every=10, num_tuning_tasks=0)
    a, b = suite.tasks
    header = make_header(suite.to_dict(), {
        "cand": {"kind": "baseline", "name": "adam", "role": "candidate", "settings": [CAND], "source": {}},
        "adam_lr_grid": {"kind": "baseline", "name": "adam", "role": "baseline", "settings": GRID, "source": {}},
    }, ["adam_per_task", "adam_global"])
    runs = {
        # task a: validation prefers lr=0.01 (index 1), test would prefer lr=0.1 (index 2)
        (a.id, "adam_lr_grid", GRID[0]): _run(0.1, 1.5, [2.0, 1.8, 1.6]),
        (a.id, "adam_lr_grid", GRID[1]): _run(1.0, 0.5, [2.0, 1.0, 0.6]),
        (a.id, "adam_lr_grid", GRID[2]): _run(0.5, 0.9, [2.0, 0.4, 0.5]),
        (a.id, "cand", CAND): _run(2.0, 0.45, [2.0, 0.9, 0.7]),
        # task b: lr=0.1 best on validation; lr=0.01 a close second
        (b.id, "adam_lr_grid", GRID[0]): _run(0.1, 1.9, [2.0, 1.9, 1.9]),
        (b.id, "adam_lr_grid", GRID[1]): _run(0.5, 0.6, [2.0, 0.9, 0.8]),
        (b.id, "adam_lr_grid", GRID[2]): _run(1.0, 0.4, [2.0, 0.7, 0.5]),
        (b.id, "cand", CAND): _run(0.25, 1.0, [2.0, 1.5, 1.0]),
    }
    return suite, Results(header, runs)


def test_per_task_baseline_is_chosen_on_validation(results):
    _, res = results
    summary = summarize(res)
    a, b = summary.tasks
    assert a.chosen["adam_per_task"] == GRID[1]  # not GRID[2], the test-loss favourite
    assert b.chosen["adam_per_task"] == GRID[2]


def test_global_baseline_leave_one_out_uses_the_other_tasks(results):
    _, res = results
    a, b = summarize(res).tasks
    # on task a, the choice comes from task b's validation losses alone, and vice versa
    assert a.chosen["adam_global"] == GRID[2]
    assert b.chosen["adam_global"] == GRID[1]


def test_normalised_losses_match_hand_computation(results):
    _, res = results
    a, b = summarize(res).tasks
    # task a: initial test loss 2.0; best test loss of any baseline run at any evaluation: 0.4
    assert a.initial_test == pytest.approx(2.0) and a.best_test == pytest.approx(0.4)
    assert a.final_test["cand"] == pytest.approx(0.7)
    assert a.normalized_test["cand"] == pytest.approx((0.7 - 0.4) / (2.0 - 0.4), rel=1e-6)
    assert a.normalized_test["adam_per_task"] == pytest.approx((0.6 - 0.4) / 1.6, rel=1e-6)
    assert a.normalized_test["adam_global"] == pytest.approx((0.5 - 0.4) / 1.6, rel=1e-6)
    assert b.normalized_test["cand"] == pytest.approx((1.0 - 0.5) / 1.5, rel=1e-6)


def test_comparisons_win_fraction_improvement_and_speedup(results):
    _, res = results
    summary = summarize(res)
    per_task = next(c for c in summary.comparisons if c.baseline == "adam_per_task")
    # test losses: a: cand 0.7 vs 0.6 (loses); b: cand 1.0 vs 0.5 (loses)
    assert per_task.win_fraction == 0.0
    expected = [(0.6 - 0.7) / 1.6, (0.5 - 1.0) / 1.5]
    np.testing.assert_allclose(per_task.improvement, expected, rtol=1e-5)
    # task a: the candidate's training curve (rate 2) is faster than every grid curve (best rate 1)
    a = summary.tasks[0]
    final = final_train_loss(a.runs["cand"])
    envelope = 2.0 / (1.0 + 1.0 * np.arange(1, STEPS + 1))  # rate 1 is the envelope
    window = STEPS // 20
    assert window == 1 and final == pytest.approx(2.0 / (1 + 2.0 * STEPS))
    assert per_task.speedups[0] == math.inf and not np.any(envelope <= final)
    # task b: the candidate (rate 0.25) is 4x slower than the envelope (rate 1): speedup 1/4
    assert per_task.speedups[1] == pytest.approx(0.25)


def test_missing_runs_are_reported_not_silently_dropped(results):
    suite, res = results
    partial = Results(res.header, {k: v for k, v in res.runs.items() if k[1] != "cand" or k[0] != suite.tasks[1].id})
    with pytest.raises(ValueError, match="finish the evaluation"):
        summarize(partial)
