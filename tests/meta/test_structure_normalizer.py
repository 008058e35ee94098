"""Vectorised normaliser fits of a structure's configs, and which fits measure anything."""

import jax
import numpy as np
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


def test_fit_is_adams_training_curve_of_each_config_as_inner_train_gives_it():
    """The vectorised program trains each config as lopt.inner.train does (same keys, same curve):
    initial = the step-0 loss averaged over rates, best = the lowest 20-step running mean."""
    configs = [{"family": "quadratic", "dim": 5, "seed": s, "noise": 0.1} for s in range(2)]
    tasks = [lopt.tasks.build(c) for c in configs]
    key, rates, steps = jax.random.key(3), (0.02, 0.2), 30
    seconds = {}
    fits = fit_structure(lopt.tasks.stack(tasks), num_steps=steps, learning_rates=rates, key=key, seconds=seconds)
    assert sorted(seconds) == ["program", "run"] and min(seconds.values()) >= 0  # no program cache: no stages
    seed_key = jax.random.split(key, 1)[0]
    for task, fit in zip(tasks, fits):
        curves = [np.asarray(lopt.inner.train(task, lopt.optimizers.adam(learning_rate=lr), key=seed_key,
                                              num_steps=steps, eval_every=steps, eval_batches=1).train_loss)
                  for lr in rates]
        best = min(np.convolve(c, np.ones(20) / 20, mode="valid").min() for c in curves)
        assert fit.initial_loss == pytest.approx(np.mean([c[0] for c in curves]), rel=1e-6)
        assert fit.best_loss == pytest.approx(best, rel=1e-5)


def test_informative_threshold_and_negative_losses():
    assert informative(LossNormalizer(-2.0, -2.1))  # 5% of |initial| below a negative initial loss
    assert not informative(LossNormalizer(-2.0, -2.0 - 0.02 * (1 - 1e-3)))
    assert not all(informative(n) for n in extrapolate([3.0], MIN_RELATIVE_GAP))
    assert all(informative(n) for n in extrapolate([3.0], 2 * MIN_RELATIVE_GAP))
