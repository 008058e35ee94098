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


@pytest.mark.skipif(not lopt.meta.program_cache.available(), reason="jax.export serialisation needs flatbuffers")
def test_programs_from_the_program_cache_score_as_the_traced_ones(tmp_path):
    """A second evaluator reads the exported programs back and scores exactly as a traced one."""
    from lopt.meta.program_cache import ProgramCache

    configs = [{"family": "quadratic", "dim": 3, "seed": s} for s in range(2)]
    lopt_ = lopt.learned.get("learnable_adam")
    theta = lopt_.init(jax.random.key(0))
    traced = HeldoutEvaluator(lopt_, [("quadratic", configs)], eval_steps=12, fit=_fit).evaluate(
        theta, key=jax.random.key(3))
    scores = []
    for _ in range(2):
        cache = ProgramCache(tmp_path)
        evaluator = HeldoutEvaluator(lopt_, [("quadratic", configs)], eval_steps=12, fit=_fit, program_cache=cache)
        scores.append(evaluator.evaluate(theta, key=jax.random.key(3)))
        assert (cache.misses, cache.hits) == ((1, 0) if len(scores) == 1 else (0, 1))
    assert scores[0] == scores[1]
    np.testing.assert_allclose(scores[0]["heldout/quadratic"], traced["heldout/quadratic"], rtol=1e-6)
    assert len(list(tmp_path.glob("program-heldout-quadratic-*.json"))) == 1
