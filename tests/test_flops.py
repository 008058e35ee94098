"""lopt.flops counts FLOPs from the jaxpr, multiplying loop bodies by their trip counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.flops import FlopCount, count_flops, xla_cost_analysis_flops


def _xla_flops(fn, *args):
    """XLA's cost analysis of the compiled function (what lopt.flops is checked against)."""
    return xla_cost_analysis_flops(jax.jit(fn).lower(*args).compile())


def test_dot_and_batched_dot_are_two_per_multiply_add():
    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert count_flops(jnp.matmul, a, b).flops == 2 * 3 * 5 * 7
    x, y = jnp.ones((4, 3, 5)), jnp.ones((4, 5, 7))
    assert count_flops(lambda x, y: jnp.einsum("bij,bjk->bik", x, y), x, y).flops == 2 * 4 * 3 * 5 * 7


@pytest.mark.parametrize("groups", [1, 3])
def test_convolution_counts_taps_on_real_inputs(groups):
    x = jnp.ones((2, 6, 8, 8))  # NCHW
    k = jnp.ones((9, 6 // groups, 3, 3))  # OIHW
    valid = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", feature_group_count=groups)
    same = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", feature_group_count=groups)
    per_tap = 2 * 2 * 9 * (6 // groups)  # batch x output features x input features per group x 2
    assert count_flops(valid, x, k).flops == per_tap * (6 * 3) ** 2
    # SAME: 8 outputs x 3 taps per axis, less the two taps that fall on padding at the edges
    assert count_flops(same, x, k).flops == per_tap * (8 * 3 - 2) ** 2


def test_strided_convolution_gradient_agrees_with_xla():
    """The input gradient of a strided convolution dilates its input: the holes are not counted."""
    x, k = jnp.ones((4, 3, 16, 16)), jnp.ones((8, 3, 3, 3))

    def loss(x, k):
        return jnp.sum(jax.lax.conv_general_dilated(x, k, (2, 2), "SAME") ** 2)

    grad = jax.grad(loss, argnums=(0, 1))
    xla = _xla_flops(grad, x, k)
    np.testing.assert_allclose(count_flops(grad, x, k).flops, xla, rtol=0.05)


def test_scan_bodies_multiply_by_length_and_nest():
    x = jnp.ones((4, 4))
    body_flops = 2 * 4 * 4 * 4

    def inner(c, _):
        return c @ c, None

    def outer(c, _):
        return jax.lax.scan(inner, c, None, length=3)[0], None

    one = count_flops(lambda x: jax.lax.scan(inner, x, None, length=1)[0], x)
    ten = count_flops(lambda x: jax.lax.scan(inner, x, None, length=10)[0], x)
    nested = count_flops(lambda x: jax.lax.scan(outer, x, None, length=5)[0], x)
    assert (one.flops, ten.flops, nested.flops) == (body_flops, 10 * body_flops, 15 * body_flops)
    assert ten.exact
    # a static-bound fori_loop is a scan too (plus its counter's increment per iteration)
    fori = count_flops(lambda x: jax.lax.fori_loop(0, 7, lambda i, c: c @ c, x), x).flops
    assert 7 * body_flops <= fori <= 7 * (body_flops + 2)


def test_xla_cost_analysis_counts_a_loop_once_which_is_why_this_exists():
    x = jnp.ones((16, 16))
    fn = lambda x: jax.lax.scan(lambda c, _: (c @ c, None), x, None, length=50)[0]
    xla = _xla_flops(fn, x)
    ours = count_flops(fn, x).flops
    assert ours == 50 * 2 * 16 ** 3
    assert xla < ours / 10


def test_straight_line_mlp_grad_agrees_with_xla():
    """Without loops the count is XLA's to within a few percent (products dominate)."""
    params = {"w1": jnp.ones((256, 512)), "w2": jnp.ones((512, 64))}
    batch = jnp.ones((128, 256))

    def loss(p, x):
        return jnp.mean(jnp.square(jax.nn.relu(x @ p["w1"]) @ p["w2"]))

    grad = jax.grad(loss)
    xla = _xla_flops(grad, params, batch)
    ours = count_flops(grad, params, batch).flops
    # forward products, then dW2, dh and dW1 (no gradient with respect to the batch)
    products = 2 * 128 * (2 * 256 * 512 + 3 * 512 * 64)
    assert products <= ours < 1.05 * products
    np.testing.assert_allclose(ours, xla, rtol=0.05)


def test_cond_takes_the_costliest_branch_and_while_is_flagged():
    x = jnp.ones((8, 8))
    costly = count_flops(lambda x: jax.lax.cond(x[0, 0] > 0, lambda x: x @ x, lambda x: x + 1.0, x), x)
    assert costly.flops >= 2 * 8 ** 3
    looped = count_flops(lambda x: jax.lax.while_loop(lambda c: c[0, 0] < 100.0, lambda c: c @ c, x), x)
    assert looped.unbounded_loops == 1 and not looped.exact
    assert 2 * 8 ** 3 <= looped.flops < 2 * 2 * 8 ** 3  # the body once, plus the condition


def test_jitted_functions_and_sums():
    x = jnp.ones((8, 8))
    assert count_flops(jax.jit(lambda x: x @ x), x).flops == 2 * 8 ** 3
    total = FlopCount(1.0, 1, ("pallas_call",)) + FlopCount(2.0)
    assert (total.flops, total.unbounded_loops, total.opaque, total.exact) == (3.0, 1, ("pallas_call",), False)


def test_bad_input():
    with pytest.raises(TypeError, match="count_flops needs a function"):
        count_flops(jnp.ones(3))


def test_docstring_examples():
    import doctest

    import lopt.flops

    result = doctest.testmod(lopt.flops)
    assert result.attempted >= 3 and result.failed == 0
