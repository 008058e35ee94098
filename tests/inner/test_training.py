"""Inner training: shapes, exactness against separate runs, divergence, determinism, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def quad():
    return lopt.tasks.build({"family": "quadratic", "dim": 6, "condition_number": 20.0, "seed": 3})


def test_curves_shapes_and_eval_steps(quad):
    curves = lopt.inner.train(quad, optax.adam(0.05), key=KEY, num_steps=25, eval_every=10)
    assert curves.train_loss.shape == (25,)
    np.testing.assert_array_equal(curves.eval_steps, [0, 10, 20, 25])
    assert curves.valid_loss.shape == (4,) == curves.test_accuracy.shape
    assert np.all(np.isnan(curves.valid_accuracy))  # a quadratic has no accuracy
    assert lopt.inner.num_evals(25, 10) == 4


def test_quadratic_sgd_matches_closed_form(quad):
    """Noise-free SGD on a quadratic: x_t - x* = (I - lr A)^t (x_0 - x*), so the loss is known exactly."""
    lr, steps = 0.5, 30
    curves, state = lopt.inner.train(quad, optax.sgd(lr), key=KEY, num_steps=steps, eval_every=steps,
                                     return_state=True)
    init_key, _, _ = jax.random.split(KEY, 3)
    a = np.asarray(quad.settings["matrix"], np.float64)
    delta = np.asarray(quad.init(init_key)["x"], np.float64) - np.asarray(quad.settings["optimum"], np.float64)
    expected = []
    for _ in range(steps):
        expected.append(0.5 * delta @ a @ delta)
        delta = delta - lr * a @ delta
    np.testing.assert_allclose(curves.train_loss, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves.valid_loss[-1], 0.5 * delta @ a @ delta, rtol=1e-4, atol=1e-6)
    assert int(state.step) == steps


def test_iterate_equals_train():
    task = lopt.tasks.build({"family": "mlp", "dataset": "digits", "hidden_sizes": [16], "batch_size": 32})
    curves = lopt.inner.train(task, optax.adam(3e-3), key=KEY, num_steps=30, eval_every=7)
    chunks = list(lopt.inner.iterate(task, optax.adam(3e-3), key=KEY, num_steps=30, eval_every=7))
    assert [c[0] for c in chunks] == [0, 7, 14, 21, 28, 30]
    np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), curves.train_loss, rtol=1e-6)
    np.testing.assert_allclose([c[2]["valid_loss"] for c in chunks], curves.valid_loss, rtol=1e-6)


def test_train_many_equals_separate_runs(quad):
    lrs = np.logspace(-3, 0.5, 15).astype(np.float32)
    grid = lopt.inner.train_many(quad, optax.adam, {"learning_rate": lrs}, key=KEY, num_seeds=2,
                                 num_steps=40, eval_every=20)
    assert grid.train_loss.shape == (15, 2, 40)
    # One un-vmapped program, compiled once, run separately for each (lr, seed).
    single_run = jax.jit(lambda lr, k: lopt.inner.train(quad, optax.adam(lr), key=k, num_steps=40, eval_every=20))
    for i, lr in enumerate(lrs):
        for s in range(2):
            single = single_run(lr, jax.random.fold_in(KEY, s))
            np.testing.assert_allclose(grid.train_loss[i, s], single.train_loss, rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(grid.test_loss[i, s], single.test_loss, rtol=2e-5, atol=1e-6)


def test_train_many_mlp_grid_matches_separate_run():
    task = lopt.tasks.build({"family": "mlp", "dataset": "digits", "hidden_sizes": [16], "batch_size": 32})
    lrs = np.array([1e-3, 1e-2, 1e-1], np.float32)
    grid = lopt.inner.train_many(task, optax.adam, {"learning_rate": lrs}, key=KEY, num_steps=20, eval_every=10)
    single = lopt.inner.train(task, optax.adam(1e-2), key=jax.random.fold_in(KEY, 0), num_steps=20, eval_every=10)
    np.testing.assert_allclose(grid.train_loss[1, 0], single.train_loss, rtol=1e-5, atol=1e-6)


def test_divergence_is_recorded_not_raised(quad):
    curves = lopt.inner.train(quad, optax.sgd(100.0), key=KEY, num_steps=60, eval_every=20)
    assert bool(curves.diverged)
    step = int(curves.diverged_step)
    assert 0 <= step < 60
    assert not np.isfinite(curves.train_loss[step])
    assert np.all(np.isnan(curves.train_loss[step + 1:]))
    assert np.isnan(curves.valid_loss[-1])
    assert np.isfinite(curves.train_loss[:step]).all()
    summary = jax.tree.map(lambda x: x, curves).summary()
    assert summary["diverged"] and summary["diverged_step"] == step


def test_divergence_in_one_grid_member_leaves_others_intact(quad):
    grid = lopt.inner.train_many(quad, optax.sgd, {"learning_rate": np.array([0.1, 100.0])}, key=KEY,
                                 num_steps=30, eval_every=10)
    np.testing.assert_array_equal(np.asarray(grid.diverged)[:, 0], [False, True])
    assert np.isfinite(grid.train_loss[0]).all()


def test_same_seed_same_curve_and_different_seed_differs():
    task = lopt.tasks.build({"family": "mlp", "dataset": "digits", "hidden_sizes": [], "batch_size": 16})
    run = jax.jit(lambda k: lopt.inner.train(task, optax.sgd(0.1), key=k, num_steps=15, eval_every=15))
    a, b, c = run(jax.random.key(5)), run(jax.random.key(5)), run(jax.random.key(6))
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    assert not np.allclose(a.train_loss, c.train_loss)


def test_extra_args_reach_optimizer(quad):
    """An optimizer that needs ``loss=`` (as learned optimizers do) receives the training loss."""

    def init(params):
        return {"last_loss": jnp.zeros(())}

    def update(updates, state, params=None, *, loss):
        return jax.tree.map(lambda g: -0.1 * g, updates), {"last_loss": loss}

    opt = optax.GradientTransformationExtraArgs(init, update)
    curves, state = lopt.inner.train(quad, opt, key=KEY, num_steps=5, return_state=True)
    np.testing.assert_allclose(state.opt_state["last_loss"], curves.train_loss[-1], rtol=1e-6)


def test_jit_and_vmap_over_keys(quad):
    fn = jax.jit(jax.vmap(lambda k: lopt.inner.train(quad, optax.adam(0.1), key=k, num_steps=10).train_loss))
    out = fn(jax.random.split(KEY, 3))
    assert out.shape == (3, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_steps": 0}, "num_steps=0"),
    ({"num_steps": 10, "eval_every": 0}, "eval_every=0"),
    ({"num_steps": 10, "eval_batches": 0}, "eval_batches=0"),
])
def test_bad_schedule_raises(quad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lopt.inner.train(quad, optax.sgd(0.1), key=KEY, **kwargs)


def test_bad_optimizer_and_key_raise(quad):
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        lopt.inner.train(quad, "adam", key=KEY, num_steps=5)
    with pytest.raises(TypeError, match="jax.random key"):
        lopt.inner.train(quad, optax.sgd(0.1), key=0, num_steps=5)


def test_train_many_bad_hparams_raise(quad):
    with pytest.raises(ValueError, match="one length"):
        lopt.inner.train_many(quad, optax.adam, {"learning_rate": [1e-3, 1e-2], "b1": [0.9]}, key=KEY, num_steps=5)
    with pytest.raises(ValueError, match="non-empty dict"):
        lopt.inner.train_many(quad, optax.adam, {}, key=KEY, num_steps=5)
    with pytest.raises(TypeError, match="callable"):
        lopt.inner.train_many(quad, "adam", {"learning_rate": [1e-3]}, key=KEY, num_steps=5)
