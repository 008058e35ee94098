"""outer.trainable: meta-training part of theta (lopt.meta.trainable)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.meta.config import MetaTrainConfig
from lopt.meta.estimators.base import sample_perturbation
from lopt.meta.trainable import freeze_except, trainable_mask
from lopt.meta.trainer import MetaTrainer

THETA = {"network": {"w0": jnp.ones((3, 2)), "b0": jnp.zeros(2)}, "schedule": jnp.zeros(4), "log_lr": jnp.zeros(())}


def test_mask_follows_leaf_names_and_empty_pattern_trains_all():
    # flattening order: log_lr, network/b0, network/w0, schedule
    assert trainable_mask(THETA, "schedule|log_lr") == [True, False, False, True]
    assert trainable_mask(THETA, "^network/w") == [False, False, True, False]
    assert trainable_mask(THETA, "") == [True] * 4


@pytest.mark.parametrize("pattern, error, words", [
    ("sched(", ValueError, "not a valid regular expression"),
    ("momentum", ValueError, "matches none of theta's leaves"),
    (3, TypeError, "must be a string"),
])
def test_bad_patterns_are_named(pattern, error, words):
    with pytest.raises(error, match=words):
        trainable_mask(THETA, pattern)


def test_perturbations_skip_frozen_leaves():
    eps = sample_perturbation(THETA, jax.random.key(0), 5, 0.1, "schedule")
    assert eps["schedule"].shape == (5, 4) and float(jnp.abs(eps["schedule"]).min()) > 0
    assert not np.any(np.asarray(eps["network"]["w0"])) and not np.any(np.asarray(eps["log_lr"]))
    full = sample_perturbation(THETA, jax.random.key(0), 5, 0.1)
    np.testing.assert_array_equal(full["schedule"], eps["schedule"])  # same draws on trainable leaves


def test_frozen_leaves_stay_put_under_warm_momentum_and_clipping():
    inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    grads = jax.tree.map(jnp.ones_like, THETA)
    grads["network"]["w0"] = 100.0 * grads["network"]["w0"]  # would dominate the clipped norm
    warm_state = inner.update(grads, inner.init(THETA), THETA)[1]  # momentum on every leaf
    outer = freeze_except(inner, "schedule")
    assert jax.tree.structure(outer.init(THETA)) == jax.tree.structure(inner.init(THETA))
    updates, _ = outer.update(grads, warm_state, THETA)
    assert not np.any(np.asarray(updates["network"]["w0"])) and not np.any(np.asarray(updates["log_lr"]))
    # the schedule's gradient (norm 2) is clipped on its own, not beside w0's: Adam's update is -lr * m/sqrt(v)
    mu, nu = warm_state[1][0].mu["schedule"], warm_state[1][0].nu["schedule"]
    g = 0.5  # ones(4) clipped to norm 1
    m, v = 0.9 * mu + 0.1 * g, 0.999 * nu + 0.001 * g**2
    expected = -0.1 * (m / (1 - 0.9**2)) / (jnp.sqrt(v / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(updates["schedule"], expected, rtol=1e-4)


def _config(trainable: str) -> MetaTrainConfig:
    return MetaTrainConfig.from_dict({
        "name": "test", "seed": 3,
        "task": {"family": "quadratic", "config": {"dim": 8, "condition_number": 20.0}},
        "lopt": {"name": "learnable_sgdm", "config": {"lr": 0.05}},
        "estimator": {"kind": "pes", "num_tasks": 4, "std": 0.05, "unroll_length": 5},
        "truncation": {"kind": "constant", "horizon": 20},
        "normalizer": {"enabled": False},
        "outer": {"learning_rate": 0.01, "trainable": trainable},
        "trainer": {"outer_steps": 5, "eval_every": 0, "eval_tasks": 2, "eval_steps": 20,
                    "checkpoint_every": 100, "checkpoint_minutes": 100.0},
        "final_eval": {"enabled": False},
    })


def test_trainer_moves_only_the_trainable_leaves(tmp_path):
    start = lopt.learned.get("learnable_sgdm", lr=0.05).init(jax.random.key(0))
    theta = MetaTrainer(_config("log_lr"), tmp_path / "part", progress=False).run()["theta"]
    assert float(theta["logit_momentum"]) == float(start["logit_momentum"])
    assert abs(float(theta["log_lr"]) - float(start["log_lr"])) > 1e-4
    full = MetaTrainer(_config(""), tmp_path / "all", progress=False).run()["theta"]
    assert float(full["logit_momentum"]) != float(start["logit_momentum"])


def test_trainer_rejects_a_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(ValueError, match="outer.trainable='network'.*log_lr"):
        MetaTrainer(_config("network"), tmp_path, progress=False)
