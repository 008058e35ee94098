"""outer.trainable: meta-training part of theta (lopt.meta.trainable)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.meta.estimators.base import sample_perturbation
from lopt.meta.trainable import freeze_except, trainable_mask

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
