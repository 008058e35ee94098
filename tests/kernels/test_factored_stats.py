"""The one-pass statistics kernel of the ``nominal`` step against plain reductions (interpret mode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.kernels import factored_stats, tiles


def _reference(g, p):
    g2 = jnp.square(g.astype(jnp.float32))
    return jnp.mean(g2, axis=-1), jnp.mean(g2, axis=-2), jnp.mean(jnp.square(p.astype(jnp.float32)))


@pytest.mark.parametrize("shape", [(16, 16), (37, 300), (1000, 5), (300, 37), (3, 3, 17, 40), (2, 70, 129)])
def test_means_equal_plain_reductions(shape):
    """Tiles that overhang both edges, several column tiles (300 > 128 columns), a batch of matrices."""
    kg, kp = jax.random.split(jax.random.key(sum(shape)))
    g, p = jax.random.normal(kg, shape) * 3.0, jax.random.normal(kp, shape)
    got = factored_means(g, p)
    for a, b in zip(got, _reference(g, p)):
        assert a.shape == b.shape and a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=2e-6)


def factored_means(g, p, **kw):
    return factored_stats.factored_means(g, p, interpret=True, **kw)


def test_bfloat16_inputs_are_squared_in_float32():
    g = (jnp.arange(24.0).reshape(4, 6) * 1e3).astype(jnp.bfloat16)  # squares overflow bfloat16's precision
    rows, cols, p2 = factored_means(g, g)
    np.testing.assert_allclose(rows, jnp.mean(jnp.square(g.astype(jnp.float32)), axis=1), rtol=1e-6)
    np.testing.assert_allclose(cols, jnp.mean(jnp.square(g.astype(jnp.float32)), axis=0), rtol=1e-6)
    np.testing.assert_allclose(p2, jnp.mean(jnp.square(g.astype(jnp.float32))), rtol=1e-6)


def test_vmapped_over_tasks():
    g = jax.random.normal(jax.random.key(1), (3, 20, 50))
    p = jax.random.normal(jax.random.key(2), (3, 20, 50))
    got = jax.vmap(factored_means)(g, p)
    want = jax.vmap(_reference)(g, p)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-6)


def test_tile_shapes_are_powers_of_two_near_4096_elements():
    for rows, cols in [(1, 1), (7, 3), (1024, 4096), (50_000, 3), (16, 100_000)]:
        tr, tc = factored_stats.tile_shape(rows, cols)
        assert tr >= 16 and tc >= 16 and not tr & (tr - 1) and not tc & (tc - 1)
        assert tc <= 128 and tr * tc <= 4096


def test_applies_only_when_the_last_two_axes_are_factored():
    assert factored_stats.applies((8, 4)) and factored_stats.applies((3, 3, 8, 16))
    assert not factored_stats.applies((16, 2, 8))  # largest axes 0 and 2: XLA's reductions
    assert not factored_stats.applies((8,)) and not factored_stats.applies((0, 8))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"shapes \(16, 2, 8\)"):
        factored_means(jnp.ones((16, 2, 8)), jnp.ones((16, 2, 8)))
    with pytest.raises(ValueError, match="must be equal"):
        factored_means(jnp.ones((8, 4)), jnp.ones((4, 8)))


def test_statistics_option_is_validated():
    with pytest.raises(ValueError, match="statistics='triton' must be 'kernel' or 'xla'"):
        tiles.KernelConfig(statistics="triton")
