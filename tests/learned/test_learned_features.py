"""Shared features and tiny networks, checked against direct NumPy formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.learned import features as F
from lopt.learned import nn

RNG = np.random.default_rng(0)


def test_momentum_and_rms_accumulators():
    g1, g2 = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    params = {"w": jnp.zeros((3, 2))}
    decays = [0.5, 0.9]
    m = F.momentum_init(params, 2)
    v = F.rms_init(params, 2)
    for g in (g1, g2):
        m = F.momentum_update(m, {"w": jnp.asarray(g, jnp.float32)}, decays)
        v = F.rms_update(v, {"w": jnp.asarray(g, jnp.float32)}, decays)
    for j, d in enumerate(decays):
        np.testing.assert_allclose(m["w"][..., j], d * (1 - d) * g1 + (1 - d) * g2, rtol=1e-5)
        np.testing.assert_allclose(v["w"][..., j], d * (1 - d) * g1**2 + (1 - d) * g2**2, rtol=1e-5)


def test_accumulators_are_float32_for_bfloat16_grads():
    g = {"w": jnp.ones((2, 2), jnp.bfloat16)}
    m = F.momentum_update(F.momentum_init(g, 1), g, [0.9])
    assert m["w"].dtype == jnp.float32


def test_factored_dims():
    assert F.factored_dims(()) is None
    assert F.factored_dims((5,)) is None
    assert F.factored_dims((3, 7)) == (0, 1)
    assert F.factored_dims((3, 3, 8, 16)) == (2, 3)


def test_factored_update_matches_adafactor_formula():
    g = RNG.standard_normal((4, 6)).astype(np.float32)
    acc = F.factored_init({"w": jnp.zeros((4, 6))}, 1)
    new, fac_g = F.factored_update(acc, {"w": jnp.asarray(g)}, [0.0], eps=0.0)
    row = np.mean(g**2, axis=1)  # d0 = 1 (largest) is reduced for rows
    col = np.mean(g**2, axis=0)
    np.testing.assert_allclose(new["w"].row[:, 0], row, rtol=1e-5)
    np.testing.assert_allclose(new["w"].col[:, 0], col, rtol=1e-5)
    # Factored estimate of g**2: row * col / mean(row).
    v_hat = row[:, None] * col[None, :] / row.mean()
    np.testing.assert_allclose(fac_g["w"][..., 0], g / np.sqrt(v_hat), rtol=1e-4)


def test_factored_vector_is_unfactored_rms():
    g = RNG.standard_normal(5).astype(np.float32)
    acc = F.factored_init({"b": jnp.zeros(5)}, 2)
    new, fac_g = F.factored_update(acc, {"b": jnp.asarray(g)}, [0.5, 0.9], eps=0.0)
    assert new["b"].row is None and new["b"].col is None
    np.testing.assert_allclose(new["b"].full[:, 1], 0.1 * g**2, rtol=1e-5)
    np.testing.assert_allclose(fac_g["b"][:, 1], g / np.sqrt(0.1 * g**2), rtol=1e-4)


def test_factored_features_shapes():
    shapes = [(), (5,), (4, 6), (3, 3, 2, 8)]

    @jax.jit
    def run():
        out = []
        for shape in shapes:
            p = {"x": jnp.ones(shape)}
            acc, _ = F.factored_update(F.factored_init(p, 3), p, [0.9, 0.99, 0.999])
            out.append(F.factored_features(acc["x"], jnp.ones((*shape, 3)), shape))
        return out

    for shape, feats in zip(shapes, run()):
        assert [f.shape for f in feats] == [(*shape, 3)] * 5
        assert all(bool(jnp.all(jnp.isfinite(f))) for f in feats)


def test_tensor_moments_and_normalisation():
    x = jnp.asarray(RNG.standard_normal((5, 4, 3)) * [1.0, 10.0, 100.0], jnp.float32)
    mean, msq = F.tensor_moments(x)
    np.testing.assert_allclose(mean, np.mean(np.asarray(x), axis=(0, 1)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(msq, np.mean(np.asarray(x) ** 2, axis=(0, 1)), rtol=1e-5)
    y = F.second_moment_normalize(x)
    np.testing.assert_allclose(np.mean(np.asarray(y) ** 2, axis=(0, 1)), 1.0, rtol=1e-3)
    np.testing.assert_allclose(y, F.second_moment_normalize(x, mean_sq=msq), rtol=1e-6)
    # A scalar tensor's features are normalised by themselves.
    z = F.second_moment_normalize(jnp.asarray([3.0, -4.0]))
    np.testing.assert_allclose(z, [1.0, -1.0], rtol=1e-5)


def test_time_and_fraction_embeddings():
    e0 = F.tanh_time_embedding(0)
    np.testing.assert_allclose(e0, np.full(11, math.tanh(-1.0)), rtol=1e-6)
    e = F.tanh_time_embedding(jnp.asarray(100, jnp.int32))
    np.testing.assert_allclose(e, np.tanh(100 / np.asarray(F.TIME_SCALES) - 1), rtol=1e-6)
    f = F.fraction_embedding(0.5)
    np.testing.assert_allclose(f, np.tanh(10 * (0.5 - np.asarray(F.FRACTION_POINTS))), rtol=1e-5)


def test_loss_normalizer():
    s = F.loss_normalizer_init()
    for _ in range(50):
        s = F.loss_normalizer_update(s, 2.0, 0.9)
    np.testing.assert_allclose(F.loss_normalizer_mean(s, 0.9), 2.0, rtol=1e-4)
    assert abs(float(F.loss_normalizer_feature(s, 2.0, 0.9))) < 1e-2
    assert float(F.loss_normalizer_feature(s, 100.0, 0.9)) == 5.0  # clipped
    assert float(F.loss_normalizer_mean(F.loss_normalizer_init(), 0.9)) == 0.0


def test_loss_buffer():
    s = F.loss_buffer_init(1000)
    assert s.decays.shape == (10,)
    assert bool(jnp.all(jnp.diff(s.decays) > 0))
    feats = []
    for i in range(30):
        s = F.loss_buffer_update(s, 10.0 / (1 + i))
        feats.append(F.loss_buffer_features(s))
    feats = np.asarray(feats)
    assert feats.shape == (30, 9)
    assert np.all(feats[:2] == 0)
    assert np.all(np.abs(feats) <= 1.0) and np.all(np.isfinite(feats))
    # Traced horizon.
    assert jax.jit(F.loss_buffer_init)(jnp.asarray(50)).decays.shape == (10,)


def test_shape_features_and_helpers():
    np.testing.assert_allclose(F.shape_features((3, 4)), np.log([3, 4, 1, 1]) - 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        F.shape_features((2, 2, 2, 2, 3)), np.log([2, 2, 2, 6]) - 1.0, rtol=1e-6
    )
    assert float(F.clip_log_abs(0.0)) == -5.0
    assert np.isfinite(jax.grad(F.safe_norm)(jnp.zeros(3))).all()


def test_mlp_split_context_equals_concatenation():
    net = nn.mlp_init(jax.random.key(0), [5, 7, 7, 2])
    x = jnp.asarray(RNG.standard_normal((4, 3, 3)), jnp.float32)
    ctx = jnp.asarray([0.3, -0.2], jnp.float32)
    full = nn.mlp_apply(net, jnp.concatenate([x, jnp.broadcast_to(ctx, (4, 3, 2))], -1))
    np.testing.assert_allclose(nn.mlp_apply(net, x, context=ctx), full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        nn.mlp_apply(net, x, context=jnp.ones(3))
    assert nn.mlp_sizes(net) == [5, 7, 7, 2]


def test_mlp_init_scales():
    net = nn.mlp_init(jax.random.key(1), [400, 300, 2], final_scale=0.1)
    assert abs(float(jnp.std(net["w0"])) * math.sqrt(400) - 0.88) < 0.05  # truncated at 2 std
    assert float(jnp.std(net["w1"])) < 0.1 / math.sqrt(300)
    assert float(jnp.max(jnp.abs(net["b0"]))) == 0.0


def test_mlp_flops():
    # 8 per-parameter inputs: 2*(8*32 + 32*32 + 32*2) + biases (66) + relus (64)
    assert nn.mlp_flops([19, 32, 32, 2], n_context=11) == 2 * (8 * 32 + 32 * 32 + 32 * 2) + 130


def test_lstm_cell():
    cell = nn.lstm_init(jax.random.key(0), 3, 4)
    state = nn.lstm_zero_state((2,), 4)
    x = jnp.ones((2, 3))
    h, new = nn.lstm_apply(cell, x, state)
    gates = np.asarray(x @ cell["wx"] + cell["b"])
    i, g, _, o = np.split(gates, 4, axis=-1)  # f only acts on the (zero) cell state

    def sig(z):
        return 1 / (1 + np.exp(-z))

    c = sig(i) * np.tanh(g)
    np.testing.assert_allclose(new.c, c, rtol=1e-5)
    np.testing.assert_allclose(h, sig(o) * np.tanh(c), rtol=1e-5)
    assert h.shape == (2, 4)


def test_concat_and_split_rows():
    a, b = jnp.ones((2, 3)), jnp.zeros((4, 3))
    x = nn.concat_rows([a, b])
    pa, pb = nn.split_rows(x, [a, b])
    np.testing.assert_array_equal(pa, a)
    np.testing.assert_array_equal(pb, b)
    assert nn.concat_rows([a]) is a
