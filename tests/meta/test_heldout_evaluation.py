"""lopt.meta.heldout_evaluation: scores checked against a direct computation, bad settings refused."""

import doctest

import jax
import numpy as np
import pytest

import lopt
from lopt.meta import heldout_evaluation
from lopt.meta.heldout_evaluation import HeldoutEvaluator
from lopt.meta.normalizer import LossNormalizer
from lopt.meta.structure_normalizer import fit_structure


def _fit(configs, pool, steps):
    return fit_structure(pool, num_steps=steps, learning_rates=(0.03, 0.3))


def test_scores_are_the_normalised_tail_of_each_run():
    """A held-out score is (tail loss - best) / (initial - best) of the very run the optimizer makes."""
    configs = [{"family": "quadratic", "dim": 3, "seed": s} for s in range(2)]
    lopt_ = lopt.learned.get("learnable_adam")
    calls = []

    def fit(cfgs, pool, steps):
        calls.append(steps)
        return [LossNormalizer(initial_loss=4.0, best_loss=1.0), LossNormalizer(initial_loss=2.0, best_loss=0.0)]

    evaluator = HeldoutEvaluator(lopt_, [("quadratic", configs)], eval_steps=10, fit=fit)
    theta = lopt_.init(jax.random.key(0))
    key = jax.random.key(7)
    scores = evaluator.evaluate(theta, key=key)
    assert calls == [10]  # one fit per pool, at the evaluation length
    pool = evaluator.pools()[0].pool
    keys = jax.random.split(jax.random.fold_in(key, 0), 2)
    tails = []
    for i, cfg in enumerate(configs):
        task = lopt.tasks.build(cfg)
        curves = lopt.inner.train(task, lopt_.optimizer(theta, num_steps=10), key=keys[i], num_steps=10,
                                  eval_every=10, eval_batches=2)
        tails.append(float(np.mean(curves.train_loss[-1:])))
    expected = [(tails[0] - 1.0) / 3.0, (tails[1] - 0.0) / 2.0]
    assert pool is evaluator.pools()[0].pool
    np.testing.assert_allclose(scores["heldout/quadratic"], np.mean(np.clip(expected, -2.0, 2.0)), rtol=1e-5)
    assert scores["heldout_configs"] == 2.0 and scores["heldout_uninformative"] == 0.0


def test_a_pool_whose_normalisers_measure_nothing_gives_no_score():
    configs = [{"family": "quadratic", "dim": 3, "seed": 0}]
    flat = [LossNormalizer(initial_loss=10.0, best_loss=10.0 - 0.1)]  # the 1% floor: uninformative
    evaluator = HeldoutEvaluator(lopt.learned.get("learnable_adam"), [("quadratic", configs)], eval_steps=5,
                                 fit=lambda *_: flat)
    scores = evaluator.evaluate(evaluator.lopt.init(jax.random.key(0)), key=jax.random.key(0))
    assert np.isnan(scores["heldout_normalized_loss"]) and "heldout/quadratic" not in scores
    assert scores["heldout_uninformative"] == 1.0


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_eval_steps_are_refused(steps):
    with pytest.raises(ValueError, match="eval_steps"):
        HeldoutEvaluator(lopt.learned.get("learnable_adam"), [], eval_steps=steps, fit=_fit)


def test_an_empty_pool_is_refused():
    with pytest.raises(ValueError, match="'mlp'.*no configs"):
        HeldoutEvaluator(lopt.learned.get("learnable_adam"), [("mlp", [])], eval_steps=5, fit=_fit)


def test_module_example_runs():
    assert doctest.testmod(heldout_evaluation).failed == 0
