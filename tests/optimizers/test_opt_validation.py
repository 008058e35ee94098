"""Bad hyperparameters raise ValueError/TypeError naming the value and the fix."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers import (
    adam,
    adam8p,
    linear_exponential_schedule,
    momentum,
    nadamw,
    rmsprop,
    sgd,
    warmup_cosine_schedule,
)

OUT_OF_RANGE = [
    (sgd, {"learning_rate": 0.0}, "sgd: learning_rate=0 is outside (0, inf); use a value like"),
    (adam, {"learning_rate": -0.1}, "adam: learning_rate=-0.1 is outside (0, inf)"),
    (
        adam,
        {"learning_rate": 1e-3, "b1": 1.2},
        "adam: b1=1.2 is outside [0, 1); use a value like 0.9",
    ),
    (
        adam,
        {"learning_rate": 1e-3, "b2": 1.0},
        "adam: b2=1 is outside [0, 1); use a value like 0.999",
    ),
    (adam, {"learning_rate": 1e-3, "b1": -0.1}, "adam: b1=-0.1 is outside [0, 1)"),
    (adam, {"learning_rate": 1e-3, "eps": -1e-8}, "adam: eps=-1e-08 is outside [0, inf)"),
    (momentum, {"learning_rate": 0.1, "momentum": 1.0}, "momentum: momentum=1 is outside [0, 1)"),
    (rmsprop, {"learning_rate": 0.1, "decay": -0.5}, "rmsprop: decay=-0.5 is outside [0, 1)"),
    (rmsprop, {"learning_rate": 0.1, "momentum": 2}, "rmsprop: momentum=2 is outside [0, 1)"),
    (nadamw, {"learning_rate": 0.1, "adamw_weight_decay": -1}, "nadamw: adamw_weight_decay=-1 is"),
    (
        nadamw,
        {"learning_rate": 0.1, "l2_weight_decay": -1},
        "nadamw: l2_weight_decay=-1 is outside",
    ),
    (
        nadamw,
        {"learning_rate": 0.1, "warmup_fraction": 1.5, "total_steps": 10},
        "warmup_fraction=1.5",
    ),
    (
        nadamw,
        {"learning_rate": 0.1, "constant_fraction": -0.1, "total_steps": 10},
        "constant_fraction",
    ),
    (nadamw, {"learning_rate": 0.1, "min_learning_rate_mult": 2.0}, "min_learning_rate_mult=2 is"),
    (
        nadamw,
        {"learning_rate": 0.1, "constant_fraction": 0.5, "total_steps": 0},
        "total_steps=0 is",
    ),
    (adam8p, {"learning_rate": 0.1, "l1": -1e-3}, "adam8p: l1=-0.001 is outside [0, inf)"),
    (adam8p, {"learning_rate": 0.1, "l2": -1e-3}, "adam8p: l2=-0.001 is outside [0, inf)"),
    (adam8p, {"learning_rate": 0.1, "linear_decay": -1}, "adam8p: linear_decay=-1 is outside"),
    (adam8p, {"learning_rate": 0.1, "exponential_decay": -1}, "adam8p: exponential_decay=-1 is"),
    (
        warmup_cosine_schedule,
        {"learning_rate": 1.0, "total_steps": -5},
        "warmup_cosine_schedule: total",
    ),
    (linear_exponential_schedule, {"learning_rate": 1.0, "linear_decay": -1}, "linear_decay=-1"),
]


@pytest.mark.parametrize("factory, kwargs, message", OUT_OF_RANGE)
def test_out_of_range(factory, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        factory(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan")])
def test_not_finite(bad):
    with pytest.raises(
        ValueError, match=r"adam: learning_rate=(nan|inf) is not finite; use a value"
    ):
        adam(learning_rate=bad)


@pytest.mark.parametrize("bad", ["0.1", None, True, [0.1], np.array(["a"]), 1j])
def test_not_a_number(bad):
    with pytest.raises(TypeError, match=r"adam: learning_rate.*(not a real number|not of real)"):
        adam(learning_rate=bad)


def test_concrete_array_must_be_scalar():
    with pytest.raises(
        ValueError, match=r"adam: learning_rate has shape \(3,\); pass a scalar.*vmap"
    ):
        adam(learning_rate=jnp.array([1e-3, 1e-2, 1e-1]))


def test_concrete_scalars_of_any_kind_are_accepted():
    for lr in (1, 1e-3, np.float32(1e-3), np.int64(1), np.array(1e-3), jnp.float32(1e-3)):
        adam(learning_rate=lr)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, None])
def test_nesterov_must_be_bool(bad):
    with pytest.raises(TypeError, match=r"nesterov=.* has type .*; pass True or False"):
        nadamw(0.1, nesterov=bad)
    with pytest.raises(TypeError, match=r"momentum: nesterov=.*; pass True or False"):
        momentum(0.1, nesterov=bad)


def test_momentum_nesterov_cannot_be_traced_but_nadamw_can():
    with pytest.raises(TypeError, match="momentum: nesterov is a traced bool array.*Python bool"):
        jax.jit(lambda n: momentum(0.1, nesterov=n).init(jnp.zeros(1)))(True)
    jax.jit(lambda n: nadamw(0.1, nesterov=n).init(jnp.zeros(1)))(True)


def test_traced_values_are_not_checked():
    # A traced value cannot be inspected; it passes (the caller owns its range).
    out = jax.jit(
        lambda lr: adam(learning_rate=lr).update(jnp.ones(1), adam(1.0).init(jnp.ones(1)))[0]
    )
    assert out(-1.0).shape == (1,)


@pytest.mark.parametrize(
    "kwargs", [{"warmup_fraction": 0.1}, {"constant_fraction": 0.5}], ids=["warmup", "decay"]
)
def test_nadamw_schedule_needs_total_steps(kwargs):
    with pytest.raises(ValueError, match=r"nadamw: .*so total_steps is needed; pass total_steps="):
        nadamw(1e-3, **kwargs)


def test_nadamw_traced_schedule_needs_total_steps():
    with pytest.raises(ValueError, match="total_steps is needed"):
        jax.vmap(lambda cf: nadamw(1e-3, constant_fraction=cf).init(jnp.zeros(1)))(jnp.ones(2))


@pytest.mark.parametrize("factory", [nadamw, adam8p])
def test_update_without_params(factory):
    opt = factory(1e-3)
    with pytest.raises(
        ValueError, match=rf"{factory.__name__}: update\(\) needs the current params"
    ):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))


@pytest.mark.parametrize("factory", [sgd, momentum, rmsprop, adam, nadamw, adam8p])
def test_unknown_hyperparameter_name(factory):
    with pytest.raises(TypeError, match="unexpected keyword argument 'beta1'"):
        factory(1e-3, beta1=0.9)
