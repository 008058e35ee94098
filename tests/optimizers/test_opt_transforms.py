"""Every baseline works under jax.jit and jax.vmap over its (traced) hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import adam, get, names, sample_hparams

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -0.75])}
TOTAL_STEPS = 8  # nadamw's schedule, when sampled


def loss(params):
    return sum(
        jnp.sum((x - 0.1) ** 2 * jnp.arange(1, x.size + 1).reshape(x.shape))
        for x in jax.tree.leaves(params)
    )


def train(opt, steps=5):
    """Trains PARAMS on a quadratic inside one ``lax.scan``; returns the final params."""

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (PARAMS, opt.init(PARAMS)), None, length=steps)
    return params


def build(name, hparams):
    extra = {"total_steps": TOTAL_STEPS} if name == "nadamw" else {}
    return get(name, **hparams, **extra)


def assert_trees_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


@pytest.mark.parametrize("name", names())
def test_jit_matches_eager(name):
    opt = get(name)
    eager = train(opt)
    assert_trees_close(jax.jit(lambda: train(opt))(), eager, rtol=1e-5, atol=1e-7)
    assert float(loss(eager)) < float(loss(PARAMS))  # it optimizes


@pytest.mark.parametrize("name", names())
def test_vmap_over_learning_rates_matches_separate_runs(name):
    lrs = jnp.array([1e-3, 1e-2, 5e-2])
    run = jax.jit(lambda lr: train(get(name, learning_rate=lr)))
    batched = jax.vmap(run)(lrs)
    for i in range(len(lrs)):
        single = jax.tree.map(lambda x, i=i: x[i], batched)
        assert_trees_close(single, run(lrs[i]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", names())
def test_vmap_over_sampled_hparams_matches_separate_runs(name):
    hps = sample_hparams(name, key=3, num=3)
    # Sampled values can be wild (lr up to 10); compare in a tamer regime by scaling lr down.
    hps["learning_rate"] = np.minimum(hps["learning_rate"], 1e-2).astype(np.float32)
    run = jax.jit(lambda hp: train(build(name, hp)))
    batched = jax.vmap(run)(hps)
    for i in range(3):
        single = jax.tree.map(lambda x, i=i: x[i], batched)
        assert_trees_close(single, run({k: v[i] for k, v in hps.items()}), rtol=1e-4, atol=1e-6)


def test_hparams_as_jit_arguments_do_not_recompile():
    traces = []

    @jax.jit
    def run(lr, b1):
        traces.append(1)
        return train(adam(learning_rate=lr, b1=b1))

    run(1e-2, 0.9)
    run(3e-2, 0.8)
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["nadamw", "adam8p"])
def test_update_keeps_param_dtype_and_state_structure(name):
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    opt = get(name)
    state = opt.init(params)
    updates, new_state = opt.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        assert (old.dtype, old.shape) == (new.dtype, new.shape)
