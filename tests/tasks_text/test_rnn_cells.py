"""RNN cells: shapes, hand-checked single steps, scan equals stepping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks.families import rnn


@pytest.mark.parametrize(("cell", "gates"), [("vanilla", 1), ("gru", 3), ("lstm", 4)])
def test_shapes_of_params_outputs_and_state(cell, gates):
    params = rnn.init(jax.random.key(0), cell, input_size=3, hidden_size=5)
    assert params["w_x"].shape == (3, 5 * gates)
    assert params["w_h"].shape == (5, 5 * gates)
    assert params["b"].shape == (5 * gates,)
    hs, final = rnn.run(cell, params, jnp.ones((2, 7, 3)))
    assert hs.shape == (2, 7, 5)
    if cell == "lstm":
        h, c = final
        assert h.shape == c.shape == (2, 5)
        np.testing.assert_allclose(h, hs[:, -1])
    else:
        assert final.shape == (2, 5)
        np.testing.assert_allclose(final, hs[:, -1])


def test_lstm_forget_bias_starts_at_one():
    b = rnn.init(jax.random.key(0), "lstm", input_size=2, hidden_size=4)["b"]
    np.testing.assert_array_equal(b, [0.0] * 4 + [1.0] * 4 + [0.0] * 8)


def test_init_scale_multiplies_weights():
    one = rnn.init(jax.random.key(1), "gru", 3, 4)
    two = rnn.init(jax.random.key(1), "gru", 3, 4, scale=2.0)
    np.testing.assert_allclose(two["w_x"], 2 * one["w_x"])
    np.testing.assert_allclose(two["w_h"], 2 * one["w_h"])


def test_vanilla_step_by_hand():
    # h' = tanh(x w_x + h w_h + b) = tanh(1 * 0.5 + 0.25 * 2 + 0) = tanh(1) = 0.761594
    params = {"w_x": jnp.array([[0.5]]), "w_h": jnp.array([[2.0]]), "b": jnp.array([0.0])}
    state, h = rnn.step("vanilla", params, jnp.array([[0.25]]), jnp.array([[1.0]]))
    np.testing.assert_allclose(h, [[0.7615942]], rtol=1e-6)
    np.testing.assert_allclose(state, h)


def test_gru_step_by_hand():
    # Gates (r, z, n). x = 1, h = 0.5. r = sigmoid(0) = 0.5, z = sigmoid(0) = 0.5,
    # n = tanh(x * 1 + r * (h * 2)) = tanh(1.5) = 0.905148, h' = (1 - z) n + z h = 0.702574.
    params = {"w_x": jnp.array([[0.0, 0.0, 1.0]]), "w_h": jnp.array([[0.0, 0.0, 2.0]]), "b": jnp.zeros(3)}
    _, h = rnn.step("gru", params, jnp.array([[0.5]]), jnp.array([[1.0]]))
    np.testing.assert_allclose(h, [[0.7025741]], rtol=1e-6)


def test_lstm_step_by_hand():
    # Gates (i, f, g, o). x = 1, h = 0, c = 0.5. i = f = o = sigmoid(0) = 0.5, g = tanh(1).
    # c' = f c + i g = 0.25 + 0.5 tanh(1) = 0.630797, h' = o tanh(c') = 0.279300.
    params = {"w_x": jnp.array([[0.0, 0.0, 1.0, 0.0]]), "w_h": jnp.zeros((1, 4)), "b": jnp.zeros(4)}
    (h, c), out = rnn.step("lstm", params, (jnp.zeros((1, 1)), jnp.array([[0.5]])), jnp.array([[1.0]]))
    np.testing.assert_allclose(c, [[0.6307971]], rtol=1e-6)
    np.testing.assert_allclose(h, [[0.2793004]], rtol=1e-6)
    np.testing.assert_allclose(out, h)


@pytest.mark.parametrize("cell", ["vanilla", "gru", "lstm"])
def test_scan_matches_stepping(cell):
    params = rnn.init(jax.random.key(2), cell, input_size=3, hidden_size=4)
    xs = jax.random.normal(jax.random.key(3), (2, 5, 3))
    hs, _ = rnn.run(cell, params, xs)
    state = rnn.initial_state(cell, 2, 4)
    for t in range(5):
        state, h = rnn.step(cell, params, state, xs[:, t])
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-5, atol=1e-6)


def test_unknown_cell_is_named():
    with pytest.raises(ValueError, match="cell='rnn'.*vanilla"):
        rnn.init(jax.random.key(0), "rnn", 2, 2)
