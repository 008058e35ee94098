"""Conformance battery: every registered learned optimizer passes every test here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from learned_helpers import (
    NUM_STEPS,
    all_finite,
    make,
    quadratic_loss,
    quadratic_params,
    step,
    unroll,
)

import lopt.learned

NAMES = lopt.learned.names()


def _perturbed(lopt_, theta, key, scale=0.01):
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_jit_step_preserves_structure_and_dtypes(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(0))
    params = quadratic_params()
    params["half"] = jnp.ones((4, 3), jnp.bfloat16)

    @jax.jit
    def run(theta, params):
        opt = lopt_.optimizer(theta, num_steps=NUM_STEPS)
        state = opt.init(params)
        loss, grads = jax.value_and_grad(quadratic_loss)(params)
        updates, state = opt.update(grads, state, params, loss=loss)
        updates2, state2 = opt.update(grads, state, params, loss=loss)
        return updates, updates2, state, state2

    updates, updates2, state, state2 = run(theta, params)
    for u in (updates, updates2):
        assert jax.tree.structure(u) == jax.tree.structure(params)
        for p_leaf, u_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(u)):
            assert u_leaf.shape == p_leaf.shape
            assert u_leaf.dtype == p_leaf.dtype
        assert all_finite(u)
    assert jax.tree.structure(state) == jax.tree.structure(state2)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert any(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates2))


def test_scan_100_steps(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(1))
    params, losses = jax.jit(lambda t, p: unroll(lopt_, t, p, 100))(theta, quadratic_params())
    assert losses.shape == (100,)
    assert all_finite(params) and all_finite(losses)


def test_vmap_over_thetas(name):
    lopt_ = make(name)
    base_theta = lopt_.init(jax.random.key(2))
    thetas = jax.vmap(lambda k: _perturbed(lopt_, base_theta, k, 0.1))(
        jax.random.split(jax.random.key(3), 3)
    )
    params = quadratic_params()
    final, losses = jax.jit(jax.vmap(lambda t: unroll(lopt_, t, params, 5)))(thetas)
    assert losses.shape == (3, 5)
    assert all_finite(final)
    # Different thetas give different trajectories.
    assert not np.allclose(losses[0, -1], losses[1, -1], rtol=0, atol=0)
    # The vmapped result matches a plain call for one theta.
    one = jax.tree.map(lambda x: x[1], thetas)
    _, losses1 = jax.jit(lambda t: unroll(lopt_, t, params, 5))(one)
    np.testing.assert_allclose(losses[1], losses1, rtol=1e-5, atol=1e-6)


def test_no_recompilation_on_new_values(name):
    lopt_ = make(name)
    traces = []

    @jax.jit
    def run(theta, params, num_steps):
        traces.append(1)
        opt = lopt_.optimizer(theta, num_steps=num_steps)
        state = opt.init(params)
        params, state, loss = step(opt, params, state)
        params, state, loss = step(opt, params, state)
        return params, loss

    theta = lopt_.init(jax.random.key(4))
    params = quadratic_params()
    out1 = run(theta, params, jnp.asarray(100))
    theta2 = _perturbed(lopt_, theta, jax.random.key(5))
    params2 = jax.tree.map(lambda x: x * 0.5, params)
    out2 = run(theta2, params2, jnp.asarray(200))
    jax.block_until_ready((out1, out2))
    assert len(traces) == 1


def _train(opt, params, n=4):
    state = opt.init(params)
    for _ in range(n):
        params, state, _ = jax.jit(lambda p, s: step(opt, p, s))(params, state)
    return params, state


def test_inside_optax_chain(name):
    lopt_ = make(name)
    opt = optax.chain(
        optax.clip_by_global_norm(10.0),
        lopt_.optimizer(lopt_.init(jax.random.key(6)), num_steps=NUM_STEPS),
    )
    params, _ = _train(opt, quadratic_params())
    assert all_finite(params)


def test_inside_multisteps(name):
    lopt_ = make(name)
    inner = lopt_.optimizer(lopt_.init(jax.random.key(7)), num_steps=NUM_STEPS)
    opt = optax.MultiSteps(inner, every_k_schedule=2)
    params0 = quadratic_params()
    state = opt.init(params0)
    p1, state, _ = jax.jit(lambda p, s: step(opt, p, s))(params0, state)
    # First mini-step accumulates only.
    for a, b in zip(jax.tree.leaves(params0), jax.tree.leaves(p1)):
        np.testing.assert_array_equal(a, b)
    p2, state, _ = jax.jit(lambda p, s: step(opt, p, s))(p1, state)
    assert all_finite(p2)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))


def test_inside_apply_if_finite(name):
    lopt_ = make(name)
    inner = lopt_.optimizer(lopt_.init(jax.random.key(8)), num_steps=NUM_STEPS)
    opt = optax.apply_if_finite(inner, max_consecutive_errors=3)
    params = quadratic_params()
    state = opt.init(params)
    params, state, _ = jax.jit(lambda p, s: step(opt, p, s))(params, state)
    bad_grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)

    @jax.jit
    def bad_step(p, s):
        u, s = opt.update(bad_grads, s, p, loss=jnp.asarray(jnp.nan))
        return optax.apply_updates(p, u), s

    params2, state2 = bad_step(params, state)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(a, b)
    assert int(state2.notfinite_count) == 1
    # The inner state was kept, so training continues cleanly.
    params3, _, _ = jax.jit(lambda p, s: step(opt, p, s))(params2, state2)
    assert all_finite(params3)


def test_grad_wrt_theta_after_10_step_unroll(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(9))
    params = quadratic_params()

    def meta_loss(theta):
        final, _ = unroll(lopt_, theta, params, 10)
        return quadratic_loss(final)

    grads = jax.jit(jax.grad(meta_loss))(theta)
    assert jax.tree.structure(grads) == jax.tree.structure(theta)
    assert all_finite(grads)
    total = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads))
    assert total > 0


def test_deterministic(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(10))
    run = jax.jit(lambda t, p: unroll(lopt_, t, p, 10))
    a = run(theta, quadratic_params())
    b = run(theta, quadratic_params())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    # init(key) is deterministic too.
    for x, y in zip(jax.tree.leaves(lopt_.init(jax.random.key(10))), jax.tree.leaves(theta)):
        np.testing.assert_array_equal(x, y)


def test_fresh_theta_trains_quadratic_without_nan(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(11))
    final, losses = jax.jit(lambda t, p: unroll(lopt_, t, p, 200, horizon=200))(
        theta, quadratic_params()
    )
    assert all_finite(final) and all_finite(losses)
    # Fresh optimizers make small, sane steps: the loss does not blow up.
    assert float(losses[-1]) < 10 * float(losses[0])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"s": jnp.asarray(2.0)},
        {"v": jnp.ones(7)},
        [jnp.ones((2, 3)), (jnp.ones((1, 1, 1, 5)), jnp.asarray(-1.0))],
        {"k": jnp.ones((3, 3, 4, 8), jnp.bfloat16), "b": jnp.zeros(8, jnp.bfloat16)},
    ],
    ids=["empty", "scalar", "vector", "nested", "bf16_conv"],
)
def test_any_params_tree(name, params):
    lopt_ = make(name)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(12)), num_steps=NUM_STEPS)
    state = opt.init(params)
    grads = jax.tree.map(lambda x: (0.1 * jnp.ones_like(x)).astype(x.dtype), params)

    @jax.jit
    def run(p, s):
        for _ in range(2):
            u, s = opt.update(grads, s, p, loss=jnp.asarray(1.0))
            p = optax.apply_updates(p, u)
        return p, s

    new_params, new_state = run(params, state)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert all_finite(new_params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_missing_loss_raises_naming_the_extra_arg(name):
    lopt_ = make(name)
    if not lopt_.needs_loss:
        pytest.skip(f"{name} does not read the loss")
    opt = lopt_.optimizer(lopt_.init(jax.random.key(13)), num_steps=NUM_STEPS)
    params = quadratic_params()
    state = opt.init(params)
    with pytest.raises(TypeError, match=r"loss=loss"):
        opt.update(params, state, params)
    # Through optax.chain too.
    chained = optax.chain(optax.identity(), opt)
    with pytest.raises(TypeError, match=r"extra arg `loss`"):
        chained.update(params, chained.init(params), params)


def test_missing_params_raises(name):
    lopt_ = make(name)
    if not lopt_.needs_params:
        pytest.skip(f"{name} does not read params")
    opt = lopt_.optimizer(lopt_.init(jax.random.key(14)), num_steps=NUM_STEPS)
    params = quadratic_params()
    with pytest.raises(TypeError, match=r"opt.update\(grads, state, params"):
        opt.update(params, opt.init(params), loss=1.0)


def test_non_scalar_loss_raises(name):
    lopt_ = make(name)
    if not lopt_.needs_loss:
        pytest.skip(f"{name} does not read the loss")
    opt = lopt_.optimizer(lopt_.init(jax.random.key(15)), num_steps=NUM_STEPS)
    params = quadratic_params()
    with pytest.raises(ValueError, match=r"scalar"):
        opt.update(params, opt.init(params), params, loss=jnp.ones(3))


def test_wrong_theta_structure_names_the_leaf(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(16))
    names = lopt.checkpoint.leaf_names(theta)
    leaves, treedef = jax.tree.flatten(theta)
    # Wrong shape on the last leaf.
    bad = treedef.unflatten(leaves[:-1] + [jnp.zeros((*leaves[-1].shape, 2))])
    with pytest.raises(ValueError, match=rf"leaf '{names[-1]}'"):
        lopt_.optimizer(bad, num_steps=NUM_STEPS)
    # Missing leaf.
    if isinstance(theta, dict):
        first = next(iter(theta))
        missing = {k: v for k, v in theta.items() if k != first}
        with pytest.raises(ValueError, match=rf"'{first}"):
            lopt_.optimizer(missing, num_steps=NUM_STEPS)


def test_grads_params_mismatch_raises(name):
    lopt_ = make(name)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(17)), num_steps=NUM_STEPS)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"leaf 'b'"):
        opt.update({"a": jnp.ones(3), "b": jnp.ones(4)}, state, params, loss=1.0)


def test_hashable_and_jit_static(name):
    lopt_ = make(name)
    assert hash(lopt_) == hash(make(name))
    assert lopt_ == make(name)

    @jax.jit
    def f(theta):
        return jax.tree.leaves(theta)[0] * 2

    g = jax.jit(lambda lo, t: jax.tree.leaves(t)[0] * 2, static_argnums=0)
    theta = lopt_.init(jax.random.key(18))
    np.testing.assert_array_equal(f(theta), g(lopt_, theta))
