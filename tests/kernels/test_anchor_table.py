"""The anchored direction's lookup table against the network it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt.pretrained
from lopt.kernels import anchor_table, tiles

CLIP = 10.0


def _network(a, b, w1, b1, w2, b2, x):
    return jax.nn.relu(jax.nn.relu(x[:, None] * a + b) @ w1 + b1) @ w2 + b2


def _check(a, b, w1, b1, w2, b2, x, rtol=2e-6):
    t = anchor_table.table(a, b, w1, b1, w2, b2, clip=CLIP)
    direct = _network(a, b, w1, b1, w2, b2, x)
    got = anchor_table.lookup(t.__getitem__, x, anchor_table.table_size(a.shape[0]))
    scale = float(jnp.max(jnp.abs(direct))) + 1.0
    np.testing.assert_allclose(got, direct, rtol=0, atol=rtol * scale * (1 + CLIP))
    return t


def _random(seed, hidden=8):
    k = jax.random.split(jax.random.key(seed), 6)
    a, b, b1 = (jax.random.normal(x, (hidden,)) for x in k[:3])
    return a, b, jax.random.normal(k[3], (hidden, hidden)), b1, jax.random.normal(k[4], (hidden,)), \
        jax.random.normal(k[5], ())


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_on_a_fine_grid_and_at_every_kink(seed):
    weights = _random(seed)
    t = anchor_table.table(*weights, clip=CLIP)
    kinks = t[:128][jnp.isfinite(t[:128])]
    assert 1 <= kinks.shape[0] <= 80 and bool(jnp.all(jnp.diff(kinks) >= 0))  # sorted, within bounds
    x = jnp.concatenate([jnp.linspace(-CLIP, CLIP, 4001), kinks, jnp.nextafter(kinks, jnp.inf),
                         jnp.nextafter(kinks, -jnp.inf)])
    _check(*weights, x)


def test_the_pretrained_networks_anchor_at_its_first_bias():
    """The real function: the shipped weights, with the context of a 2,048 x 1,024 matrix mid-run."""
    theta, lo = lopt.pretrained.load()
    net = theta["network"]
    time_context = jnp.zeros(net["w_context"].shape[0] - 3)
    bias = net["b0"] + jnp.concatenate([time_context, jnp.asarray([0.0, 6.3 / 4, 3.0 / 4])]) @ net["w_context"]
    _check(net["w0"][-1], bias, net["w1"], net["b1"], net["w2"][:, 0], net["b2"][0],
           jnp.linspace(-CLIP, CLIP, 20001))
    assert lo.anchored_direction and lo.input_clip == CLIP


def test_degenerate_units_dead_flat_and_kinks_outside_the_range():
    a, b, w1, b1, w2, b2 = _random(11)
    a = a.at[0].set(0.0).at[1].set(1e-3)  # a constant unit; a kink at -b/1e-3, far outside [-10, 10]
    w1 = w1.at[:, 2].set(0.0)  # a second-layer unit that never moves
    t = _check(a, b, w1, b1, w2, b2, jnp.linspace(-CLIP, CLIP, 4001))
    assert bool(jnp.all(jnp.abs(t[:128][jnp.isfinite(t[:128])]) < CLIP))


def test_a_nan_input_gives_nan():
    t = anchor_table.table(*_random(3), clip=CLIP)
    out = anchor_table.lookup(t.__getitem__, jnp.asarray([jnp.nan, 0.5]), 128)
    assert bool(jnp.isnan(out[0])) and bool(jnp.isfinite(out[1]))


def test_table_size_holds_every_piece():
    for hidden in (1, 4, 8, 32):
        size = anchor_table.table_size(hidden)
        assert size > (hidden + 1) ** 2 - 1 and not size & (size - 1)  # kinks <= size - 1: searchable


def test_anchor_option_is_validated():
    with pytest.raises(ValueError, match="anchor='lookup' must be 'table' or 'network'"):
        tiles.KernelConfig(anchor="lookup")
