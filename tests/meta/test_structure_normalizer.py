"""Vectorised normaliser fits of a structure's configs, and which fits measure anything."""

import pytest

import lopt
from lopt.meta.normalizer import LossNormalizer
from lopt.meta.structure_normalizer import MIN_RELATIVE_GAP, extrapolate, fit_structure, informative


@pytest.fixture(scope="module")
def pool():
    configs = [{"family": "quadratic", "dim": 4, "seed": s} for s in range(2)]
    return lopt.tasks.stack([lopt.tasks.build(c) for c in configs])


def test_fit_measures_a_real_gap_and_floors_a_stuck_one(pool):
    moving = fit_structure(pool, num_steps=40, learning_rates=(0.03, 0.1))
    stuck = fit_structure(pool, num_steps=40, learning_rates=(1e-9,))  # Adam cannot move in 40 steps
    for fit, still in zip(moving, stuck):
        assert fit.initial_loss == pytest.approx(still.initial_loss, rel=1e-6)
        assert fit.best_loss < 0.5 * fit.initial_loss and informative(fit)
        # no run lowered the loss by 1%: the floor, and the fit says it measures nothing
        assert still.best_loss == pytest.approx(still.initial_loss * (1 - MIN_RELATIVE_GAP), rel=1e-9)
        assert not informative(still)


def test_informative_threshold_and_negative_losses():
    assert informative(LossNormalizer(-2.0, -2.1))  # 5% of |initial| below a negative initial loss
    assert not informative(LossNormalizer(-2.0, -2.0 - 0.02 * (1 - 1e-3)))
    assert not all(informative(n) for n in extrapolate([3.0], MIN_RELATIVE_GAP))
    assert all(informative(n) for n in extrapolate([3.0], 2 * MIN_RELATIVE_GAP))
