"""The quadratic family: known optimum, exact and noisy gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt


@pytest.fixture(scope="module")
def task():
    return lopt.tasks.build({"family": "quadratic", "dim": 8, "condition_number": 50.0, "noise": 0.3,
                             "seed": 4})


def test_matrix_is_symmetric_positive_definite_with_the_requested_condition(task):
    matrix = np.asarray(task.settings["matrix"], np.float64)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    eig = np.linalg.eigvalsh(matrix)
    assert eig.min() > 0
    np.testing.assert_allclose(eig.max() / eig.min(), 50.0, rtol=1e-3)


def test_loss_at_the_optimum_is_zero_on_the_valid_split(task):
    params = {"x": task.settings["optimum"]}
    for seed in range(3):
        assert float(task.loss(params, task.sample_batch(jax.random.key(seed), "valid"))) == 0.0
        assert float(task.loss(params, task.sample_batch(jax.random.key(seed), "test"))) == 0.0


def test_loss_is_positive_away_from_the_optimum(task):
    params = task.init(jax.random.key(0))
    assert float(task.loss(params, task.sample_batch(jax.random.key(1), "valid"))) > 0


def test_valid_gradient_is_a_times_x_minus_optimum(task):
    params = task.init(jax.random.key(0))
    grad = jax.grad(task.loss)(params, task.sample_batch(jax.random.key(1), "valid"))["x"]
    expected = task.settings["matrix"] @ (params["x"] - task.settings["optimum"])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_train_gradients_are_noisy_but_unbiased(task):
    params = task.init(jax.random.key(0))
    exact = np.asarray(task.settings["matrix"] @ (params["x"] - task.settings["optimum"]))
    n = 4000
    grads = jax.vmap(lambda k: jax.grad(task.loss)(params, task.sample_batch(k, "train"))["x"])(
        jax.random.split(jax.random.key(2), n))
    grads = np.asarray(grads, np.float64)
    # Noisy: each draw is off by about `noise` per coordinate.
    np.testing.assert_allclose(grads.std(axis=0), 0.3, rtol=0.1)
    # Unbiased: the mean is within 5 standard errors of the exact gradient in every coordinate.
    standard_error = 0.3 / np.sqrt(n)
    assert np.all(np.abs(grads.mean(axis=0) - exact) < 5 * standard_error)


def test_noise_free_task_has_exact_train_gradients():
    task = lopt.tasks.build({"family": "quadratic", "dim": 5, "noise": 0.0})
    params = task.init(jax.random.key(0))
    g_train = jax.grad(task.loss)(params, task.sample_batch(jax.random.key(1), "train"))
    g_valid = jax.grad(task.loss)(params, task.sample_batch(jax.random.key(1), "valid"))
    np.testing.assert_allclose(g_train["x"], g_valid["x"])


def test_unrotated_matrix_is_diagonal_and_init_scale_scales_init():
    a = lopt.tasks.build({"family": "quadratic", "dim": 4, "rotate": False, "init_scale": 1.0})
    b = lopt.tasks.build({"family": "quadratic", "dim": 4, "rotate": False, "init_scale": 3.0})
    matrix = np.asarray(a.settings["matrix"])
    np.testing.assert_array_equal(matrix, np.diag(np.diag(matrix)))
    key = jax.random.key(5)
    np.testing.assert_allclose(b.init(key)["x"], 3.0 * a.init(key)["x"], rtol=1e-6)


def test_same_seed_same_problem():
    a = lopt.tasks.build({"family": "quadratic", "dim": 6, "seed": 9})
    b = lopt.tasks.build({"family": "quadratic", "dim": 6, "seed": 9})
    c = lopt.tasks.build({"family": "quadratic", "dim": 6, "seed": 10})
    np.testing.assert_array_equal(a.settings["optimum"], b.settings["optimum"])
    assert not jnp.allclose(a.settings["optimum"], c.settings["optimum"])


def test_bad_split_is_rejected(task):
    with pytest.raises(ValueError, match="split='validation'"):
        task.sample_batch(jax.random.key(0), "validation")
