"""Conformance battery: every registered learned optimizer passes every test here.

Compilation dominates the cost of these tests on CPU, so the 100-step unroll is compiled
once per architecture and shared by the scan, determinism, no-recompilation and
quadratic tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt.checkpoint
import lopt.learned

NAMES = lopt.learned.names()
NUM_STEPS = 100

# Helpers come from this folder's conftest (the `lh` fixture); the module-level cache
# below needs them outside a test, so they are bound in `_bind`.
make = quadratic_params = mixed_params = quadratic_loss = step = unroll = all_finite = None
perturbed = None


@pytest.fixture(autouse=True)
def _bind(lh):
    global make, quadratic_params, mixed_params, quadratic_loss, step, unroll, all_finite
    global perturbed
    perturbed = lh.perturbed
    make, quadratic_params, mixed_params = lh.make, lh.quadratic_params, lh.mixed_params
    quadratic_loss, step, unroll, all_finite = lh.quadratic_loss, lh.step, lh.unroll, lh.all_finite


@functools.cache
def _unroll100(name):
    """jit(theta, params, horizon) -> (params, losses) for 100 steps, with a trace count."""
    lopt_ = make(name)
    traces = []

    @jax.jit
    def run(theta, params, horizon):
        traces.append(1)
        return unroll(lopt_, theta, params, 100, horizon=horizon)

    return run, traces


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_scan_100_steps(name):
    run, _ = _unroll100(name)
    theta = make(name).init(jax.random.key(1))
    params, losses = run(theta, quadratic_params(), jnp.asarray(NUM_STEPS))
    assert losses.shape == (100,)
    assert all_finite(params) and all_finite(losses)


def test_deterministic(name):
    run, _ = _unroll100(name)
    theta = make(name).init(jax.random.key(10))
    a = run(theta, quadratic_params(), jnp.asarray(NUM_STEPS))
    b = run(theta, quadratic_params(), jnp.asarray(NUM_STEPS))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(make(name).init(jax.random.key(10))), jax.tree.leaves(theta)):
        np.testing.assert_array_equal(x, y)


def test_no_recompilation_on_new_values(name):
    run, traces = _unroll100(name)
    theta = make(name).init(jax.random.key(4))
    params = quadratic_params()
    jax.block_until_ready(run(theta, params, jnp.asarray(NUM_STEPS)))
    before = len(traces)
    theta2 = perturbed(theta, 5)
    params2 = jax.tree.map(lambda x: x * 0.5, params)
    jax.block_until_ready(run(theta2, params2, jnp.asarray(2 * NUM_STEPS)))
    assert len(traces) == before


def test_fresh_theta_trains_quadratic_without_nan(name):
    run, _ = _unroll100(name)
    theta = make(name).init(jax.random.key(11))
    final, losses = run(theta, quadratic_params(), jnp.asarray(NUM_STEPS))
    assert all_finite(final) and all_finite(losses)
    # Fresh optimizers make small, sane steps: the loss does not blow up.
    assert float(losses[-1]) < 2 * float(losses[0])


def test_vmap_over_thetas(name):
    lopt_ = make(name)
    base_theta = lopt_.init(jax.random.key(2))
    thetas = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[perturbed(base_theta, seed, 0.1) for seed in range(3)]
    )
    params = quadratic_params()
    horizon = jnp.asarray(NUM_STEPS)
    run, _ = _unroll100(name)
    final, losses = jax.jit(jax.vmap(run, in_axes=(0, None, None)))(thetas, params, horizon)
    assert losses.shape == (3, 100)
    assert all_finite(final)
    # Different thetas give different trajectories.
    assert not np.array_equal(losses[0], losses[1])
    # The vmapped result matches a plain call for one theta.
    _, losses1 = run(jax.tree.map(lambda x: x[1], thetas), params, horizon)
    np.testing.assert_allclose(losses[1], losses1, rtol=1e-4, atol=1e-6)


# The per-tensor architectures take the longest to compile under grad (tens of seconds on
# a 2-core CPU); they still run by default, `-m "not slow"` skips them.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("hierarchical", "hyper") else n
        for n in NAMES
    ],
)
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


def test_jit_any_params_tree_preserves_structure_and_dtypes(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(0))
    params = mixed_params()

    @jax.jit
    def run(theta, params):
        opt = lopt_.optimizer(theta, num_steps=NUM_STEPS)
        loss, grads = jax.value_and_grad(quadratic_loss)(params)
        state0 = opt.init(params)
        updates, state = opt.update(grads, state0, params, loss=loss)
        return updates, state0, state

    updates, state0, state = run(theta, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    for p_leaf, u_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(updates)):
        assert u_leaf.shape == p_leaf.shape
        assert u_leaf.dtype == p_leaf.dtype
    assert all_finite(updates)
    assert any(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates))
    # The state keeps its structure, shapes and (float32/int32) dtypes.
    assert lopt.checkpoint.tree_mismatch(state, state0) is None
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


def test_state_buffers_are_distinct_and_not_theta(name):
    """A fresh state can be donated to a jitted step (no buffer appears twice)."""
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(20))
    opt = lopt_.optimizer(theta, num_steps=NUM_STEPS)
    state = opt.init(mixed_params())
    leaves = [x for x in jax.tree.leaves(state) if x.size]
    theta_ids = {id(x) for x in jax.tree.leaves(theta)}
    assert len({id(x) for x in leaves}) == len(leaves)
    assert not theta_ids & {id(x) for x in leaves}
    pointers = [x.unsafe_buffer_pointer() for x in leaves]
    theta_pointers = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(theta) if x.size}
    assert len(set(pointers)) == len(pointers)
    assert not theta_pointers & set(pointers)


def test_empty_params_tree(name):
    lopt_ = make(name)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(12)), num_steps=NUM_STEPS)
    for params in ({}, [], {"a": {}}):
        state = opt.init(params)
        updates, new_state = jax.jit(
            lambda s, params=params: opt.update(params, s, params, loss=jnp.asarray(1.0))
        )(state)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _jit_update(opt):
    # The state is donated, as in a typical training step: this fails if two state leaves
    # share a buffer.
    @functools.partial(jax.jit, donate_argnums=1)
    def run(p, s, grads, loss):
        u, s = opt.update(grads, s, p, loss=loss)
        return optax.apply_updates(p, u), s

    def good_step(p, s):
        loss, grads = jax.value_and_grad(quadratic_loss)(p)
        return run(p, s, grads, loss)

    return run, good_step


def test_inside_chain_and_apply_if_finite(name):
    lopt_ = make(name)
    inner = lopt_.optimizer(lopt_.init(jax.random.key(6)), num_steps=NUM_STEPS)
    opt = optax.apply_if_finite(optax.chain(optax.clip_by_global_norm(10.0), inner), 3)
    run, good_step = _jit_update(opt)
    p0 = quadratic_params()
    p1, s1 = good_step(p0, opt.init(p0))
    assert all_finite(p1) and not _same(p0, p1)
    # A NaN gradient (and loss) changes nothing and is counted.
    nan_grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), p1)
    p2, s2 = run(p1, s1, nan_grads, jnp.asarray(jnp.nan))
    assert _same(p1, p2)
    assert int(s2.notfinite_count) == 1
    # The inner state was kept, so training continues cleanly.
    p3, s3 = good_step(p2, s2)
    assert all_finite(p3) and not _same(p2, p3)
    assert int(s3.notfinite_count) == 0


def test_inside_multisteps(name):
    lopt_ = make(name)
    inner = lopt_.optimizer(lopt_.init(jax.random.key(7)), num_steps=NUM_STEPS)
    opt = optax.MultiSteps(inner, every_k_schedule=2)
    _, good_step = _jit_update(opt)
    p0 = quadratic_params()
    p1, s1 = good_step(p0, opt.init(p0))
    assert _same(p0, p1)  # the first mini-step only accumulates
    p2, s2 = good_step(p1, s1)
    assert all_finite(p2) and not _same(p1, p2)
    p3, _ = good_step(*good_step(p2, s2))
    assert all_finite(p3) and not _same(p2, p3)


# -- bad input ----------------------------------------------------------------------------


def test_missing_loss_raises_naming_the_extra_arg(name):
    lopt_ = make(name)
    if not lopt_.needs_loss:
        pytest.skip(f"{name} does not read the loss")
    opt = lopt_.optimizer(lopt_.init(jax.random.key(13)), num_steps=NUM_STEPS)
    params = quadratic_params()
    state = opt.init(params)
    with pytest.raises(TypeError, match=r"opt\.update\(grads, state, params, loss=loss\)"):
        opt.update(params, state, params)
    chained = optax.chain(optax.identity(), opt)
    with pytest.raises(TypeError, match=r"extra arg `loss`"):
        chained.update(params, chained.init(params), params)


def test_missing_params_raises(name):
    lopt_ = make(name)
    if not lopt_.needs_params:
        pytest.skip(f"{name} does not read params")
    opt = lopt_.optimizer(lopt_.init(jax.random.key(14)), num_steps=NUM_STEPS)
    params = quadratic_params()
    with pytest.raises(TypeError, match=r"opt\.update\(grads, state, params"):
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
    bad = treedef.unflatten([*leaves[:-1], jnp.zeros((*leaves[-1].shape, 2))])
    with pytest.raises(ValueError, match=rf"leaf '{names[-1]}'"):
        lopt_.optimizer(bad, num_steps=NUM_STEPS)
    first = next(iter(theta))
    missing = {k: v for k, v in theta.items() if k != first}
    with pytest.raises(ValueError, match=rf"leaf '{first}"):
        lopt_.optimizer(missing, num_steps=NUM_STEPS)
    with pytest.raises(ValueError, match=r"unexpected"):
        lopt_.optimizer({**theta, "extra": jnp.zeros(2)}, num_steps=NUM_STEPS)


def test_grads_params_mismatch_raises(name):
    lopt_ = make(name)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(17)), num_steps=NUM_STEPS)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"leaf 'b'"):
        opt.update({"a": jnp.ones(3), "b": jnp.ones(4)}, state, params, loss=1.0)


def test_hashable_config(name):
    lopt_ = make(name)
    assert hash(lopt_) == hash(make(name))
    assert lopt_ == make(name)
    assert lopt.learned.get(name, **lopt_.config()) == lopt_


def test_theta_spec_matches_init(name):
    lopt_ = make(name)
    theta = lopt_.init(jax.random.key(19))
    spec = lopt_.theta_spec()
    assert lopt.checkpoint.tree_mismatch(theta, spec) is None
    for leaf in jax.tree.leaves(theta):
        assert leaf.dtype == jnp.float32
