"""names / defaults / get."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import adam, defaults, get, names


def test_names():
    assert names() == ("sgd", "momentum", "rmsprop", "adam", "nadamw", "adam8p")


@pytest.mark.parametrize("name", names())
def test_get_defaults_builds_a_transformation(name):
    opt = get(name)
    assert isinstance(opt, optax.GradientTransformation)
    params = jnp.ones(3)
    updates, _ = opt.update(jnp.ones(3), opt.init(params), params)
    assert updates.shape == (3,)


def test_defaults():
    assert defaults("adam") == {"learning_rate": 0.001, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert defaults("momentum") == {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False}
    assert set(defaults("adam8p")) == {
        "learning_rate",
        "b1",
        "b2",
        "eps",
        "l1",
        "l2",
        "linear_decay",
        "exponential_decay",
    }
    assert defaults("nadamw")["total_steps"] is None
    d = defaults("sgd")
    d["learning_rate"] = 5.0
    assert defaults("sgd")["learning_rate"] == 0.01  # a fresh dict each call


def test_get_overrides_defaults():
    got = get("adam", learning_rate=0.1, b1=0.5)
    want = adam(0.1, b1=0.5)
    g = jnp.array([1.0, -2.0])
    s1, s2 = got.init(g), want.init(g)
    for _ in range(2):
        (u1, s1), (u2, s2) = got.update(g, s1), want.update(g, s2)
        np.testing.assert_allclose(u1, u2)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown optimizer 'adamm'; valid: sgd, momentum, .*adam8p\. Did you mean 'adam'\?",
    ):
        get("adamm")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid: sgd"):
        defaults("lion")
    with pytest.raises(TypeError, match="optimizer must be a string"):
        get(None)


def test_unknown_hyperparameter_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"adam: unknown hyperparameter\(s\) 'beta1'; valid: learning_rate, b1, b2, eps",
    ):
        get("adam", beta1=0.9)
    with pytest.raises(ValueError, match=r"'adamw_decay' -> 'adamw_weight_decay'"):
        get("nadamw", adamw_decay=0.1)
