"""packed_half.fma: float16 multiply-adds, emulated on the CPU as the GPU rounds them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lopt.kernels import packed_half


def test_emulated_fma_rounds_the_exact_result_to_float16():
    """x * w + acc rounded once to float16: the float32 emulation equals the exactly rounded result
    wherever its float32 sum is exact, and is never more than one float16 unit away."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20_000).astype(np.float16)
    acc = (rng.standard_normal(20_000) * 4).astype(np.float16)
    w = np.float16(-0.3713)
    got = np.asarray(packed_half.fma(jnp.asarray(x), float(w), jnp.asarray(acc), packed=False))
    exact = (x.astype(np.float64) * np.float64(w) + acc.astype(np.float64)).astype(np.float16)
    assert got.dtype == np.float16
    assert np.mean(got == exact) > 0.999
    ulp = np.abs(np.spacing(exact.astype(np.float16))).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - exact.astype(np.float64)) <= ulp)
    # the weight is rounded to float16 first, as the GPU's immediate operand is
    np.testing.assert_array_equal(
        np.asarray(packed_half.fma(jnp.asarray(x), -0.3713, jnp.asarray(acc), packed=False)), got)


def test_broadcast_takes_floats_scalars_and_arrays():
    assert packed_half.broadcast(2.5, (3,)).tolist() == [2.5, 2.5, 2.5]
    assert packed_half.broadcast(jnp.float32(1.0 / 3.0), (2,)).dtype == jnp.float16
    assert packed_half.broadcast(jnp.arange(4.0), (4,)).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_emulated_fma_with_relu_is_the_rounded_result_clamped_at_zero():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4096).astype(np.float16)
    acc = rng.standard_normal(4096).astype(np.float16)
    plain = np.asarray(packed_half.fma(jnp.asarray(x), 0.75, jnp.asarray(acc), packed=False))
    fused = np.asarray(packed_half.fma(jnp.asarray(x), 0.75, jnp.asarray(acc), packed=False, relu=True))
    assert fused.dtype == np.float16 and 0.3 < np.mean(fused == 0) < 0.7
    np.testing.assert_array_equal(fused, np.maximum(plain, np.float16(0)))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="fma.rn.f16x2 is inline PTX: an NVIDIA GPU only")
@pytest.mark.parametrize("relu", [False, True])
def test_pallas_packed_fma_equals_the_emulation(relu):
    """On the GPU: ``fma.rn{.relu}.f16x2`` against the float32 emulation (one float16 unit apart at
    most, where the emulation's float32 sum rounded)."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(1024).astype(np.float16))
    acc = jnp.asarray(rng.standard_normal(1024).astype(np.float16))

    def run(packed):
        def kernel(x_ref, a_ref, o_ref):
            o_ref[...] = packed_half.fma(x_ref[...], -0.3713, a_ref[...], packed=packed, relu=relu)

        return np.asarray(pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, jnp.float16),
                                         interpret=not packed,
                                         compiler_params=plgpu.CompilerParams(num_warps=4) if packed else None)(  # Triton, as the kernels
            x, acc)).astype(np.float64)

    got, want = run(True), run(False)
    assert np.all(np.abs(got - want) <= np.abs(np.spacing(want.astype(np.float16))).astype(np.float64))
    if relu:
        assert np.all(got >= 0)
