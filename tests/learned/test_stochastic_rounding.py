"""Stochastic rounding to bfloat16 and the `nominal` optimizer's bfloat16 state (XLA path)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.learned import NominalLOpt
from lopt.learned import stochastic_rounding as SR


def _neighbours(x):
    """The bfloat16 values just below and above each float32 (by truncating the bit pattern)."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    low = (bits & 0xFFFF0000).view(np.float32)
    high = ((bits & 0xFFFF0000) + 0x10000).view(np.float32)
    return low, high


def test_rounding_picks_a_neighbour_with_the_right_probability():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(64).astype(np.float32) * 10.0 ** rng.uniform(-6, 6, 64).astype(np.float32)
    draws = 4000
    index = jnp.arange(draws, dtype=jnp.uint32)
    rounded = np.stack([np.asarray(SR.round_bits(jnp.full(draws, v), SR.random_bits(index, jnp.uint32(3), 11)))
                        for v in x])
    low, high = _neighbours(x)
    assert np.all((rounded == low[:, None]) | (rounded == high[:, None]))
    # P(away from zero) = the dropped fraction of a unit: the mean is the float32 value
    frac = (np.abs(x) - np.abs(low)) / (np.abs(high) - np.abs(low))
    seen = np.mean(rounded == high[:, None], axis=1)
    np.testing.assert_allclose(seen, frac, atol=4.5 * np.sqrt(0.25 / draws))
    assert np.asarray(SR.round_bits(jnp.asarray(low), jnp.full(64, 0xFFFF, jnp.uint32))).tolist() == low.tolist()


def test_rounding_keeps_specials_and_never_overflows_a_finite_value():
    big = np.float32(np.finfo(np.float32).max)
    x = jnp.asarray([np.inf, -np.inf, np.nan, big, -big, 0.0])
    r = np.asarray(SR.round_bits(x, jnp.full(6, 0xFFFF, jnp.uint32)))
    assert r[0] == np.inf and r[1] == -np.inf and np.isnan(r[2])
    assert np.isfinite(r[3]) and np.isfinite(r[4]) and r[5] == 0.0  # truncated, not rounded to inf
    # NaNs whose payload fills the top of the pattern: adding the bits wraps them past the sign
    # bit (to -0.0 or +0.0), which must not turn a NaN into a finite state value
    nans = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8001], np.uint32).view(np.float32)
    assert np.isnan(np.asarray(SR.round_bits(jnp.asarray(nans), jnp.full(3, 0xFFFF, jnp.uint32)))).all()


def test_rounding_of_state_equals_rounding_on_finite_and_bfloat16_exact_values():
    """round_bits_of_state drops the test of x itself: equal to round_bits on every finite float32
    and on every bfloat16-exact value (infinities and NaNs stored as bfloat16 included), for any bits."""
    rng = np.random.default_rng(1)
    patterns = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = patterns.view(np.float32)
    finite = x[np.isfinite(x)]
    stored = (patterns & 0xFFFF0000).view(np.float32)  # bfloat16-exact, finite or not (NaNs included)
    big = np.float32(np.finfo(np.float32).max)
    edges = np.array([np.inf, -np.inf, big, -big, 0.0, -0.0], np.float32)
    values = np.concatenate([finite, stored, edges])
    bits = jnp.asarray(rng.integers(0, 2**32, values.size, dtype=np.uint64).astype(np.uint32))
    expected = np.asarray(SR.round_bits(jnp.asarray(values), bits)).view(np.uint32)
    got = np.asarray(SR.round_bits_of_state(jnp.asarray(values), bits)).view(np.uint32)
    assert np.isnan(stored).sum() > 100  # NaN patterns of all payloads are in the sample
    np.testing.assert_array_equal(got, expected)
    # what it may not be given: a NaN whose payload lies only in the low half becomes infinity
    low_nan = np.array([0x7F800001], np.uint32).view(np.float32)
    assert np.isinf(np.asarray(SR.round_bits_of_state(jnp.asarray(low_nan), jnp.zeros(1, jnp.uint32))))[0]


def test_random_bits_are_uniform_and_differ_by_salt_and_step():
    index = jnp.arange(1 << 16, dtype=jnp.uint32)
    a = np.asarray(SR.random_bits(index, jnp.uint32(1), 0))
    b = np.asarray(SR.random_bits(index, jnp.uint32(1), 1))
    c = np.asarray(SR.random_bits(index, jnp.uint32(2), 0))
    low = a & 0xFFFF
    assert abs(low.mean() / 0xFFFF - 0.5) < 0.01
    assert np.histogram(low, bins=16)[0].min() > 0.9 * len(a) / 16
    assert np.mean(a == b) < 1e-3 and np.mean(a == c) < 1e-3


def test_slow_accumulator_keeps_moving_in_bfloat16_only_when_rounded_stochastically():
    decay, steps = 0.999, 3000
    exact = 1.0 - decay**steps  # m <- d m + (1 - d) * 1 from 0
    index = jnp.arange(256, dtype=jnp.uint32)

    def run(rounding):
        def body(m, t):
            new = decay * m.astype(jnp.float32) + (1.0 - decay)
            return (SR.to_bfloat16(new, SR.random_bits(index, t, 5)) if rounding
                    else new.astype(jnp.bfloat16)), None
        m, _ = jax.lax.scan(body, jnp.zeros(256, jnp.bfloat16), jnp.arange(1, steps + 1, dtype=jnp.uint32))
        return np.asarray(m, np.float32)

    stochastic, nearest = run(True), run(False)
    assert abs(stochastic.mean() - exact) < 0.01 * exact  # 0.950 on average
    assert nearest.max() < 0.6 * exact  # freezes once (1 - d)(1 - m) is below half a unit


def _quadratic_run(config, steps=200):
    params = {"w": jnp.linspace(-2.0, 2.0, 48).reshape(8, 6), "b": jnp.linspace(0.5, 1.0, 6)}
    theta = config.init(jax.random.key(0))
    theta["network"]["w2"] = 0.05 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    opt = config.optimizer(theta, num_steps=steps)
    scales = {"w": jnp.logspace(-1, 1, 48).reshape(8, 6), "b": jnp.ones(6)}

    def loss(p):
        return sum(jnp.sum(s * jnp.square(x - 1.0)) for x, s in zip(jax.tree.leaves(p), jax.tree.leaves(scales)))

    @jax.jit
    def run(p):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (jax.tree.map(jnp.add, p, u), s), loss(p)
        (p, s), losses = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
        return p, s, losses
    return run(params), loss(params)


def test_bfloat16_state_optimizer_trains_like_the_float32_one():
    f32 = NominalLOpt(step_size="distance", relative_initial_distance=1e-3, anchored_direction=True)
    bf16 = dataclasses.replace(f32, state_dtype="bfloat16")
    (_, s32, l32), start = _quadratic_run(f32)
    (_, s16, l16), _ = _quadratic_run(bf16)
    assert s16.momentum["w"].dtype == jnp.bfloat16 and s16.rms["b"].dtype == jnp.bfloat16
    assert s16.distance.grad_sum["w"].dtype == jnp.bfloat16 and s16.distance.params0["w"].dtype == jnp.bfloat16
    assert s16.factored["w"].row.dtype == jnp.float32 and s16.distance.distance.dtype == jnp.float32
    assert float(l32[-1]) < 1e-4 * float(start)  # both converge by four decades...
    assert float(l16[-1]) < 1e-4 * float(start)
    np.testing.assert_allclose(np.asarray(l16[:12]), np.asarray(l32[:12]), rtol=0.05)  # ...alike at first
    best16, best32 = (np.minimum.accumulate(np.asarray(x)) for x in (l16, l32))  # best so far
    gap = np.abs(np.log10(best16) - np.log10(best32))
    assert gap.mean() < 0.3  # and within a factor of two on average over the run
    assert abs(float(s16.distance.distance) / float(s32.distance.distance) - 1.0) < 0.05


def test_bfloat16_state_is_an_execution_option_with_checked_values():
    config = NominalLOpt(state_dtype="bfloat16")
    assert "state_dtype" not in config.config()  # theta files do not record it
    assert config.state_bytes_per_param() == 8
    with pytest.raises(ValueError, match="state_dtype='float16'.*bfloat16"):
        NominalLOpt(state_dtype="float16")


def test_gradient_through_a_bfloat16_state_unroll_is_straight_through():
    config = NominalLOpt(hidden_size=4, state_dtype="bfloat16")
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    theta = config.init(jax.random.key(0))
    theta["network"]["w2"] = 0.3 * jax.random.normal(jax.random.key(1), (4, 2))

    def meta_loss(th, cfg):
        opt = cfg.optimizer(th, num_steps=10)
        p, s = params, opt.init(params)
        for _ in range(5):
            u, s = opt.update(jax.tree.map(lambda x: 2.0 * (x - 0.5), p), s, p)
            p = jax.tree.map(jnp.add, p, u)
        return jnp.sum(jnp.square(p["w"] - 0.5))

    g16 = jax.grad(meta_loss)(theta, config)
    g32 = jax.grad(meta_loss)(theta, dataclasses.replace(config, state_dtype="float32"))
    a, b = jax.tree.leaves(g16), jax.tree.leaves(g32)
    assert all(bool(jnp.isfinite(x).all()) for x in a)
    num = np.sqrt(sum(float(jnp.sum(jnp.square(x - y))) for x, y in zip(a, b)))
    den = np.sqrt(sum(float(jnp.sum(jnp.square(y))) for y in b))
    assert den > 0 and num / den < 0.05


def test_pretrained_optimizer_takes_a_bfloat16_state_and_refuses_other_dtypes():
    import lopt.pretrained

    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.zeros(3)}
    half = lopt.pretrained.optimizer(num_steps=20, state_dtype="bfloat16")
    full = lopt.pretrained.optimizer(num_steps=20)
    s16, s32 = half.init(params), full.init(params)
    assert s16.momentum["w"].dtype == jnp.bfloat16 and s32.momentum["w"].dtype == jnp.float32
    nbytes = lambda s: sum(x.nbytes for x in jax.tree.leaves(s))
    assert nbytes(s16) < 0.6 * nbytes(s32)
    with pytest.raises(ValueError, match="state_dtype='float16'"):
        lopt.pretrained.optimizer(state_dtype="float16")


def test_mlp_bfloat16_momenta_train_like_float32_ones():
    from lopt.learned import MLPLOpt

    params = {"w": jnp.linspace(-1.0, 1.0, 60).reshape(12, 5), "b": jnp.zeros(5)}
    target = jnp.linspace(0.5, 1.5, 60).reshape(12, 5)

    def loss(p):
        return jnp.mean(jnp.square(p["w"] - target)) + jnp.mean(jnp.square(p["b"] - 1.0))

    curves = {}
    for dtype in ("float32", "bfloat16"):
        config = MLPLOpt(state_dtype=dtype)
        theta = config.init(jax.random.key(3))
        opt = config.optimizer(theta)
        p, s = params, opt.init(params)
        step = jax.jit(lambda p, s, opt=opt: opt.update(jax.grad(loss)(p), s, p))
        losses = []
        for _ in range(60):
            u, s = step(p, s)
            p = jax.tree.map(jnp.add, p, u)
            losses.append(float(loss(p)))
        curves[dtype] = np.asarray(losses)
        assert s.momentum["w"].dtype == jnp.dtype(dtype)
    assert curves["float32"][-1] < curves["float32"][0]  # the untrained MLP still moves the loss
    np.testing.assert_allclose(curves["bfloat16"], curves["float32"], rtol=1e-3)
    assert "state_dtype" not in MLPLOpt(state_dtype="bfloat16").config()
    with pytest.raises(ValueError, match="state_dtype='half'"):
        MLPLOpt(state_dtype="half")
