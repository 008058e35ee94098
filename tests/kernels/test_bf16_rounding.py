"""The fused kernels' bfloat16 state store (`lopt.kernels.bf16_rounding`): the same bits as the XLA
path's stochastic rounding, in its jnp form (interpret mode) and, on a GPU, its inline PTX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lopt.kernels import bf16_rounding
from lopt.learned import stochastic_rounding as SR

_BIG = np.finfo(np.float32).max


def _values(rng, n):
    """Finite float32 values over many scales, the largest ones (whose rounding up would overflow),
    zeros, subnormals, and stored bfloat16 values that are not finite (an accumulator's kept entry)."""
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)).astype(np.float32)
    special = np.array([_BIG, -_BIG, np.float32(3.0e38) * np.float32(1.13), 0.0, -0.0, 1e-40, -3e-39,
                        np.inf, -np.inf, np.nan, -np.nan], np.float32)
    x[: special.size] = special
    return x


def _bits(rng, n):
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)


def _pattern(x):
    return np.asarray(x, np.float32).view(np.uint32)


def _as_bits16(a):
    return np.asarray(jnp.asarray(a).astype(jnp.bfloat16)).view(np.uint16)


def _ptx_model(x, bits):
    """What the inline PTX computes, per entry, in numpy: the pattern plus the top half of ``bits``
    (wrapping), kept where it is a finite float32, else the pattern; its high half is stored."""
    pattern = _pattern(x).astype(np.uint64)
    up = ((pattern + (bits.astype(np.uint64) >> 16)) & 0xFFFFFFFF).astype(np.uint32)
    kept = np.where(np.abs(up.view(np.float32)) < np.inf, up, pattern.astype(np.uint32))
    return (kept >> 16).astype(np.uint16)


def test_jnp_form_is_the_xla_paths_rounding():
    rng = np.random.default_rng(0)
    x, bits = _values(rng, 4096), _bits(rng, 4096)
    out = bf16_rounding.to_bfloat16(jnp.asarray(x), jnp.asarray(bits), ptx=False)
    assert out.dtype == jnp.bfloat16
    reference = SR.round_bits(jnp.asarray(x), jnp.asarray(bits >> 16))
    finite = np.isfinite(x)  # round_bits keeps a non-finite float32 as it is; both give it unchanged
    np.testing.assert_array_equal(_as_bits16(out)[finite], _as_bits16(reference)[finite])
    assert np.isnan(np.asarray(out, np.float32)[np.isnan(x)]).all()
    np.testing.assert_array_equal(np.asarray(out, np.float32)[np.isinf(x)], x[np.isinf(x)])
    # the largest finite values round down rather than overflow
    assert np.isfinite(np.asarray(out, np.float32)[finite & (np.abs(x) >= np.float32(3.0e38))]).all()


def test_the_ptx_programs_arithmetic_gives_the_same_bits():
    """The GPU's program tests the unmasked sum and packs its high half: the same as masking first
    (masking the low half changes no exponent bit, so it changes no finiteness)."""
    rng = np.random.default_rng(1)
    x, bits = _values(rng, 4096), _bits(rng, 4096)
    bits[:64] = 0xFFFFFFFF  # the largest carries
    finite = np.isfinite(x)
    jnp_form = _as_bits16(bf16_rounding.to_bfloat16(jnp.asarray(x), jnp.asarray(bits), ptx=False))
    np.testing.assert_array_equal(_ptx_model(x, bits)[finite], jnp_form[finite])
    # stored non-finite bfloat16 values (low half 0): kept bit for bit
    stored = np.array([np.inf, -np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(_ptx_model(stored, np.full(3, 0xFFFFFFFF, np.uint32)), _pattern(stored) >> 16)


def test_role_bits_top_half_is_split_bits():
    bits = SR.random_bits(jnp.arange(100, dtype=jnp.uint32), jnp.uint32(5), salt=2)
    roles = jnp.arange(6)
    np.testing.assert_array_equal(SR.role_bits(bits[:, None], roles) >> 16, SR.split_bits(bits[:, None], roles))
    with pytest.raises(ValueError, match="role=64"):
        SR.role_bits(bits, SR.MAX_ROLES)


def _kernel_rounding(shape, warps, ptx):
    paired = int(np.prod(shape)) >= 64 * warps  # two or more entries per thread

    def kernel(x_ref, b_ref, o_ref):
        o_ref[...] = bf16_rounding.to_bfloat16(x_ref[...], b_ref[...], ptx=ptx, paired=paired)

    # on the GPU through Triton, as the kernels run
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(shape, jnp.bfloat16), interpret=not ptx,
                          compiler_params=plgpu.CompilerParams(num_warps=warps) if ptx else None)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="inline PTX runs on an NVIDIA GPU only")
@pytest.mark.parametrize("shape, warps", [((128, 8), 2), ((512,), 4), ((256,), 4), ((128,), 4)],
                         ids=["tile", "rows4", "rows2", "rows1"])
def test_pallas_ptx_store_equals_the_jnp_form(shape, warps):
    """On the GPU: the inline PTX (pairs of entries, entry 0 in the low half; one entry where a thread
    holds one row) stores the bits the jnp form stores, in a 2-D tile as `mlp`'s kernel holds it and
    in 1-D rows as `nominal`'s."""
    rng = np.random.default_rng(2)
    n = int(np.prod(shape))
    x, bits = _values(rng, n).reshape(shape), _bits(rng, n).reshape(shape)
    finite = np.isfinite(x)
    x[~finite] = np.where(np.isnan(x[~finite]), np.float32(np.nan), x[~finite])  # canonical stored NaN
    got = _as_bits16(_kernel_rounding(shape, warps, True)(jnp.asarray(x), jnp.asarray(bits)))
    want = _as_bits16(_kernel_rounding(shape, warps, False)(jnp.asarray(x), jnp.asarray(bits)))
    np.testing.assert_array_equal(got[finite], want[finite])
    np.testing.assert_array_equal(np.isnan(got.view(jnp.bfloat16).astype(np.float32)), np.isnan(x))
