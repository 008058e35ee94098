"""Tasks are pytrees: data and settings are jit arguments; stacking and vmapping tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt

# Small configs of every family: (base config, a dynamic change that keeps the spec).
SMALL = {
    "quadratic": ({"family": "quadratic", "dim": 6}, "seed"),
    "mlp": ({"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [16],
             "batch_size": 8}, "init_scale"),
    "conv_pooling": ({"family": "conv_pooling", "dataset": "digits", "image_size": 8, "channels": [4, 8],
                      "batch_size": 8, "pooling": "max"}, "init_scale"),
    "conv_fc": ({"family": "conv_fc", "dataset": "digits", "image_size": 8, "channels": [4],
                 "hidden_sizes": [8], "batch_size": 8}, "init_scale"),
}


def _variants(name, n):
    """``n`` tasks of one spec that differ only in dynamic settings."""
    cfg, knob = SMALL[name]
    values = [1 + i for i in range(n)] if knob == "seed" else [0.5 + 0.5 * i for i in range(n)]
    return [lopt.tasks.build({**cfg, knob: v}) for v in values]


def test_small_configs_cover_every_family():
    assert set(SMALL) <= set(lopt.tasks.names())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_jit_compiles_once_for_tasks_of_one_spec(name, fast_jit):
    traces = []

    @fast_jit
    def loss_of_fresh_params(task, key):
        traces.append(1)
        init_key, batch_key = jax.random.split(key)
        return task.loss(task.init(init_key), task.sample_batch(batch_key))

    a, b = _variants(name, 2)
    assert a.spec == b.spec
    key = jax.random.key(0)
    loss_a, loss_b = loss_of_fresh_params(a, key), loss_of_fresh_params(b, key)
    assert len(traces) == 1
    assert float(loss_a) != float(loss_b)  # the settings really reached the program


@pytest.mark.parametrize("name", sorted(SMALL))
def test_data_and_settings_are_arguments_not_constants(name):
    task = _variants(name, 1)[0]
    params = task.init(jax.random.key(0))
    closed = jax.make_jaxpr(lambda t, p, k: t.loss(p, t.sample_batch(k)))(task, params, jax.random.key(1))
    leaves = jax.tree.leaves((task, params, jax.random.key(1)))
    assert len(closed.jaxpr.invars) == len(leaves)
    assert all(np.size(c) <= 16 for c in closed.consts), [np.shape(c) for c in closed.consts]
    if task.data is not None:
        assert any(leaf is task.data.splits["train"]["x"] for leaf in leaves)


def test_task_flattens_to_data_and_settings_with_the_spec_as_treedef():
    task = _variants("mlp", 1)[0]
    leaves, treedef = jax.tree.flatten(task)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(task) and rebuilt.spec == task.spec
    assert rebuilt.data is not None and set(rebuilt.settings) == {"activation", "init_scale"}
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(task)[0]]
    assert any(".settings['init_scale']" in p for p in paths) and any(".data" in p for p in paths)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_stack_and_vmap_match_running_each_task(name, fast_jit):
    tasks = _variants(name, 3)
    stacked = lopt.tasks.stack(tasks)
    axes = lopt.tasks.vmap_axes(stacked)
    init_keys = jax.random.split(jax.random.key(0), 3)
    batch_keys = jax.random.split(jax.random.key(1), 3)

    def run(task, init_key, batch_key):
        params = task.init(init_key)
        return task.loss(params, task.sample_batch(batch_key)), params

    losses, params = fast_jit(jax.vmap(run, in_axes=(axes, 0, 0)))(stacked, init_keys, batch_keys)
    assert losses.shape == (3,)
    run_one = fast_jit(run)
    for i, task in enumerate(tasks):
        loss_i, params_i = run_one(task, init_keys[i], batch_keys[i])
        np.testing.assert_allclose(losses[i], loss_i, rtol=2e-5, atol=1e-6)
        for stacked_leaf, leaf in zip(jax.tree.leaves(params), jax.tree.leaves(params_i)):
            np.testing.assert_allclose(stacked_leaf[i], leaf, rtol=1e-5, atol=1e-6)
    assert stacked.data is tasks[0].data  # shared, not copied


def test_stack_rejects_different_specs():
    a = lopt.tasks.build(SMALL["mlp"][0])
    b = lopt.tasks.build({**SMALL["mlp"][0], "hidden_sizes": [32]})
    with pytest.raises(ValueError, match="structure"):
        lopt.tasks.stack([a, b])
    c = lopt.tasks.build({**SMALL["mlp"][0], "activation": "tanh"})
    with pytest.raises(ValueError, match="structure"):
        lopt.tasks.stack([a, c])
    with pytest.raises(ValueError, match="structure"):
        lopt.tasks.stack([lopt.tasks.build(SMALL["conv_pooling"][0]), lopt.tasks.build(SMALL["conv_fc"][0])])


def test_stack_rejects_different_datasets():
    a = lopt.tasks.build(SMALL["conv_pooling"][0])
    b = lopt.tasks.build({**SMALL["conv_pooling"][0], "dataset": "synthetic"})
    assert a.spec == b.spec
    with pytest.raises(ValueError, match="dataset"):
        lopt.tasks.stack([a, b])


def test_stacked_settings_keep_values_dtypes_and_weak_types_of_jnp_stack():
    from lopt.tasks.stacking import _stack_values

    cases = [[0.5, 2.0], [1, 3], [True, False], [np.float64(1.5), np.float64(2.5)],
             [jnp.ones((2, 3), jnp.bfloat16), jnp.zeros((2, 3), jnp.bfloat16)],
             [jnp.arange(4, dtype=jnp.int32), jnp.arange(4, 8, dtype=jnp.int32)]]
    for values in cases:
        got, want = _stack_values(values), jnp.stack([jnp.asarray(v) for v in values])
        assert got.dtype == want.dtype and got.weak_type == want.weak_type and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    bf16 = jnp.ones(3, jnp.bfloat16) * _stack_values([0.5, 2.0])[1]  # a weak setting keeps bfloat16
    assert bf16.dtype == jnp.bfloat16
    keys = _stack_values([jax.random.key(0), jax.random.key(1)])
    assert keys.shape == (2,) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(keys[1]), jax.random.key_data(jax.random.key(1)))


def test_stack_rejects_nothing():
    with pytest.raises(ValueError, match="no tasks"):
        lopt.tasks.stack([])


def test_tasks_of_one_dataset_share_arrays_however_load_is_called():
    from lopt.tasks import datasets

    assert datasets.load("digits", 8) is datasets.load("digits", image_size=8)
    a = lopt.tasks.build(SMALL["mlp"][0])
    b = lopt.tasks.build({**SMALL["mlp"][0], "init_scale": 3.0})
    assert a.data is b.data


def test_stacked_settings_can_differ_per_task_inside_scan(fast_jit):
    tasks = _variants("quadratic", 2)
    stacked = lopt.tasks.stack(tasks)
    axes = lopt.tasks.vmap_axes(stacked)

    def descend(task, key):
        params = task.init(key)

        def step(p, k):
            g = jax.grad(task.loss)(p, task.sample_batch(k, "valid"))
            return jax.tree.map(lambda x, d: x - 0.5 * d, p, g), None

        params, _ = jax.lax.scan(step, params, jax.random.split(key, 200))
        return task.loss(params, task.sample_batch(key, "valid"))

    final = fast_jit(jax.vmap(descend, in_axes=(axes, None)))(stacked, jax.random.key(0))
    assert final.shape == (2,) and bool(jnp.all(final < 1e-2))
