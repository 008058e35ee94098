"""The `nominal` architecture: Adam at its initial theta, the schedule, the learned terms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.learned import NominalLOpt


def _problem():
    key = jax.random.key(3)
    ks = jax.random.split(key, 4)
    params = {"kernel": jax.random.normal(ks[0], (3, 3, 2, 4)), "w": jax.random.normal(ks[1], (5, 3)),
              "b": jnp.zeros(3), "s": jnp.asarray(0.5)}
    grads = [jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) + 0.1 * i, params) for i in range(100)]
    return params, grads


def _run(opt, params, grads):
    state = opt.init(params)

    def step(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *grads)
    (params, _), _ = jax.lax.scan(step, (params, state), stacked)
    return params


def test_initial_theta_is_adam_over_100_steps():
    lopt_ = NominalLOpt()
    theta = lopt_.init(jax.random.key(0))
    params, grads = _problem()
    ours = _run(lopt_.optimizer(theta, num_steps=100), params, grads)
    ref = _run(optax.adam(1e-3), params, grads)
    for name in params:
        np.testing.assert_allclose(ours[name], ref[name], rtol=2e-5, atol=1e-7)


def test_schedule_is_piecewise_linear_in_log_lr():
    lopt_ = NominalLOpt(schedule_knots=3)
    theta = lopt_.init(jax.random.key(0))
    theta["schedule"] = jnp.asarray([0.0, jnp.log(2.0), jnp.log(4.0)])
    lrs = [float(lopt_.learning_rate(theta, f)) for f in (0.0, 0.5, 0.75, 1.0, 2.0)]
    np.testing.assert_allclose(lrs, [1e-3, 2e-3, 1e-3 * np.exp(0.5 * (np.log(2) + np.log(4))), 4e-3, 4e-3],
                               rtol=1e-5)


def test_learned_terms_change_the_update():
    lopt_ = NominalLOpt()
    theta = lopt_.init(jax.random.key(0))
    params, grads = _problem()
    base = _run(lopt_.optimizer(theta, num_steps=100), params, grads[:5])
    theta2 = dict(theta, network=dict(theta["network"], w2=jnp.full((8, 2), 0.3)),
                  log_tensor_mult=jnp.asarray([0.0, 1.0]))
    moved = _run(lopt_.optimizer(theta2, num_steps=100), params, grads[:5])
    assert not np.allclose(base["w"], moved["w"])
    # vectors only see the network change, matrices also the e-fold multiplier
    assert np.all(np.isfinite(moved["kernel"]))


def test_without_num_steps_uses_the_frozen_fraction():
    lopt_ = NominalLOpt(unknown_horizon_fraction=1.0, schedule_knots=2)
    theta = dict(lopt_.init(jax.random.key(0)), schedule=jnp.asarray([0.0, jnp.log(0.5)]))
    params = {"w": jnp.ones(2)}
    opt = lopt_.optimizer(theta)
    u, _ = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
    np.testing.assert_allclose(u["w"], -5e-4, rtol=1e-5)


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("b1", 1.0), ("extra_decays", (0.9,)),
                                         ("schedule_knots", 1), ("unknown_horizon_fraction", 1.5)])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        NominalLOpt(**{field: value})
