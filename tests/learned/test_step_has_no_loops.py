"""No architecture's update compiles to a loop: on a GPU every trip of a ``while`` is its own kernel
launches with a round trip to the host for the condition, a fixed cost in every optimizer step
whatever the model's size (stop 56: ``jnp.interp``'s search in the schedule was a 4-trip loop)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params

import lopt
from lopt.learned.nominal import NominalLOpt

LOOPS = {"while", "scan", "fori_loop", "cond", "switch"}


def _primitives(jaxpr, found):
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            _primitives(sub, found)
    return found


def _optimizer(name):
    if name == "pretrained":
        return lopt.pretrained.optimizer(num_steps=100)
    arch = lopt.learned.get(name)
    return arch.optimizer(arch.init(jax.random.key(0)), num_steps=100)


@pytest.mark.parametrize("name", ["pretrained", "mlp", "nominal", "hyper", "hierarchical", "lstm",
                                  "learnable_adam", "learnable_sgdm"])
def test_update_has_no_loop(name):
    params = {"w": jnp.ones((16, 8)), "b": jnp.zeros(8), "s": jnp.ones(())}
    opt = _optimizer(name)
    jaxpr = jax.make_jaxpr(lambda g, s, p: opt.update(g, s, p, loss=jnp.float32(1.0)))(
        params, opt.init(params), params)
    assert not _primitives(jaxpr.jaxpr, set()) & LOOPS


def test_schedule_matches_linear_interpolation_between_knots():
    lopt_ = NominalLOpt(schedule_knots=9)
    theta = dict(lopt_.init(jax.random.key(0)),
                 schedule=jnp.asarray(np.random.default_rng(0).standard_normal(9), jnp.float32))
    fractions = np.linspace(-0.25, 1.25, 2001).astype(np.float32)
    ours = jax.vmap(lambda f: lopt_.learning_rate(theta, f))(fractions)
    knots = np.linspace(0.0, 1.0, 9)
    expected = 1e-3 * np.exp(np.interp(np.clip(fractions, 0.0, 1.0), knots, np.asarray(theta["schedule"])))
    np.testing.assert_allclose(ours, expected, rtol=2e-6)
    # a batch of fractions at once gives the same as one at a time
    np.testing.assert_allclose(lopt_.learning_rate(theta, jnp.asarray(fractions)), ours, rtol=1e-7)
    # its derivative in the schedule: the two hat weights at 0.3 (between knots 2 and 3, 0.4 of the way)
    grad = jax.grad(lambda s: jnp.log(lopt_.learning_rate(dict(theta, schedule=s), 0.3)))(theta["schedule"])
    np.testing.assert_allclose(grad, [0, 0, 0.6, 0.4, 0, 0, 0, 0, 0], atol=1e-6)
