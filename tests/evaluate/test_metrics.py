"""Metrics on synthetic curves with known answers: speedup, envelope, selection, normalisation."""

import math

import numpy as np
import pytest

from lopt.evaluate import metrics
from lopt.meta.normalizer import normalize_loss


def _curve(num_steps, rate=1.0):
    """A smooth decreasing curve: loss after t steps is 1 / (1 + rate * t)."""
    return 1.0 / (1.0 + rate * np.arange(1, num_steps + 1))


def test_speedup_of_a_curve_against_itself_is_one():
    curve = _curve(200)
    assert metrics.speedup(curve, curve) == 1.0
    assert metrics.speedup(curve, curve[None]) == 1.0


def test_speedup_against_a_copy_needing_twice_the_steps_is_two():
    curve = _curve(100)
    slower = _curve(200, rate=0.5)  # reaches each loss at exactly twice the step
    assert metrics.speedup(curve, slower) == 2.0
    # and the other way round, a half: the fast curve needs 100 of the slow one's 200 steps
    assert metrics.speedup(slower, curve) == 0.5
    assert metrics.speedup(slower[:100], curve) == 0.5


def test_speedup_uses_the_lower_envelope_of_the_grid():
    curve = _curve(100)
    slow = _curve(100, rate=0.5)
    # Two baseline runs, each bad in one half; their envelope equals `curve` at every step.
    early = np.where(np.arange(100) < 50, curve, 1.0)
    late = np.where(np.arange(100) >= 50, curve, 1.0)
    assert metrics.speedup(curve, [early, slow]) == math.inf  # neither alone reaches the end
    assert metrics.speedup(curve, [early, late, slow]) == 1.0


def test_speedup_never_reached_and_diverged():
    curve = _curve(50)
    assert metrics.speedup(curve, np.ones(80)) == math.inf
    assert math.isnan(metrics.speedup(np.r_[curve[:-1], np.nan], curve))


def test_lower_envelope_ignores_nan_and_picks_the_minimum():
    grid = np.array([[5.0, 4.0, 3.0, np.nan], [4.5, 4.5, 2.0, 1.0], [6.0, 3.5, np.nan, np.nan]])
    np.testing.assert_array_equal(metrics.lower_envelope(grid), [4.5, 3.5, 2.0, 1.0])
    assert np.isnan(metrics.lower_envelope([[np.nan, 1.0]])[0])


def test_steps_to_reach_counts_steps_from_one():
    assert metrics.steps_to_reach([3.0, 2.0, 1.0], 3.0) == 1.0
    assert metrics.steps_to_reach([3.0, 2.0, 1.0], 1.5) == 3.0
    assert metrics.steps_to_reach([3.0, np.nan, 1.0], 2.0) == 3.0
    assert metrics.steps_to_reach([3.0], float("nan")) == math.inf


def test_per_task_selection_uses_validation_not_test():
    # setting 0 is best on test, setting 2 on validation: selection must follow validation.
    valid = np.array([[0.50, 0.52], [0.60, 0.61], [0.40, 0.44]])
    test = np.array([[0.30, 0.31], [0.60, 0.61], [0.45, 0.46]])
    assert metrics.select_per_task(valid) == 2
    assert metrics.select_per_task(test) == 0  # the wrong answer, had test been used


def test_per_task_selection_never_picks_a_diverged_setting():
    valid = np.array([[np.nan, 0.1], [0.3, 0.3], [0.2, np.nan]])
    assert metrics.select_per_task(valid) == 1  # one diverged seed disqualifies a setting
    assert metrics.select_per_task([np.nan, np.nan]) == 0


def test_global_selection_balances_tasks_by_normalising():
    # Task 1's raw losses are 100x task 0's: raw averaging would follow task 1 only.
    valid = np.array([[1.0, 0.2, 0.9],
                      [100.0, 91.0, 90.0]])
    initial = np.array([1.0, 100.0])
    # normalised: task 0 -> [1, 0, 0.875]; task 1 -> [1, 0.1, 0]; means -> [1, 0.05, 0.4375]
    assert metrics.select_global(valid, initial) == 1
    assert int(np.argmin(valid.mean(axis=0))) == 2  # what raw averaging would pick


def test_global_selection_counts_divergence_as_worst():
    valid = np.array([[0.5, 0.1], [0.5, np.nan]])
    assert metrics.select_global(valid, [1.0, 1.0]) == 0


def test_normalized_matches_hand_computation():
    losses = np.array([2.5, 1.0, 0.5, 4.0, 10.0, np.nan])
    initial, best = 3.0, 1.0
    # (loss - best) / (initial - best), clipped to [-2, 2], NaN -> 2
    expected = [0.75, 0.0, -0.25, 1.5, 2.0, 2.0]
    np.testing.assert_allclose(metrics.normalized(losses, initial, best), expected, rtol=1e-6)
    np.testing.assert_allclose(metrics.normalized(losses, initial, best),
                               np.asarray(normalize_loss(losses, initial, best)), rtol=0)


def test_improvement_and_win_fraction():
    candidate = np.array([0.1, 0.4, 0.5, 2.0])
    baseline = np.array([0.3, 0.4, 0.2, 1.0])
    np.testing.assert_allclose(metrics.improvement(candidate, baseline), [0.2, 0.0, -0.3, -1.0])
    assert metrics.win_fraction(candidate, baseline) == pytest.approx((1 + 0.5) / 4)
    assert metrics.win_fraction([np.nan], [np.nan]) == 0.5
    assert metrics.win_fraction([1.0], [np.nan]) == 1.0


def test_median_keeps_infinity_and_drops_nan():
    assert metrics.median([1.0, math.inf, math.inf]) == math.inf
    assert metrics.median([2.0, np.nan]) == 2.0
    assert math.isnan(metrics.median([np.nan]))


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.lower_envelope([1.0, 2.0]), "2-D"),
    (lambda: metrics.lower_envelope(np.zeros((0, 3))), "no curves"),
    (lambda: metrics.speedup([], [1.0]), "empty"),
    (lambda: metrics.select_global([[1.0]], [1.0, 2.0]), "tasks"),
    (lambda: metrics.improvement([1.0], [1.0, 2.0]), "tasks"),
    (lambda: metrics.win_fraction([], []), "non-zero"),
])
def test_bad_shapes_raise_value_errors_that_say_what_to_pass(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_numeric_input_is_a_type_error():
    with pytest.raises(TypeError, match="array of numbers"):
        metrics.steps_to_reach(["a", "b"], 1.0)
