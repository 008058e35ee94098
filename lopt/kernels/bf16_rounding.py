"""bfloat16 state stored from a fused kernel: stochastic rounding and packing in one step.

A kernel that keeps its accumulators in bfloat16 rounds each new value stochastically
(:func:`lopt.learned.stochastic_rounding.round_bits_of_state`) and stores it. Written with jnp,
the rounding masks the low half of the rounded-up and of the rounded-down pattern, keeps the
first where it is finite, and the store converts the float32 result to bfloat16, rounding to
nearest a value that is already exact: per entry a shift-and-add, two masks, a compare, a select,
and half a conversion. The masks are only there for the conversion: the bfloat16 value *is* the
pattern's high half. On the GPU (``ptx=True``) :func:`to_bfloat16` writes the rounding as inline
PTX over a pair of entries: the shift-and-add, the finiteness test of the unmasked sum (the same
test: masking the low half changes no exponent bit), a select, and one ``prmt`` that packs both
high halves into the stored pair. Two instructions fewer per entry.

Interpret mode (the CPU) has no PTX and takes the jnp form; both give the same bits.

Example:
    >>> import jax.numpy as jnp
    >>> from lopt.learned import stochastic_rounding as SR
    >>> x = jnp.array([1.0 + 2**-10, -2.5, 3.0e38 * 1.13, jnp.inf])
    >>> bits = SR.role_bits(jnp.full(4, 0xFFFFFFFF, jnp.uint32), 0)
    >>> to_bfloat16(x, bits, ptx=False).dtype
    dtype(bfloat16)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu

from lopt.learned import stochastic_rounding as SR

__all__ = ["to_bfloat16"]

# One entry ($1: its float32 pattern, $3: its role bits): the pattern plus the bits' high half,
# kept where it is finite (|.| < inf as a float32), else the pattern itself (its high half is the
# truncation); then the second entry ($2, $4) and both high halves packed, entry 0 in the low half
# (prmt's selector 0x7632: bytes 2-3 of the first source, then bytes 2-3 of the second).
_ENTRY = ("shr.b32 t, {bits}, 16; add.u32 {up}, {x}, t; abs.f32 a, {up}; "
          "setp.lt.f32 f, a, 0f7F800000; selp.b32 {up}, {up}, {x}, f; ")
_PAIR = ("{ .reg .b32 t, u0, u1; .reg .f32 a; .reg .pred f; "
         + _ENTRY.format(bits="$3", up="u0", x="$1") + _ENTRY.format(bits="$4", up="u1", x="$2")
         + "prmt.b32 $0, u0, u1, 0x7632; }")
# One entry alone ($1 its pattern, $2 its role bits): the same, its high half moved out as 16 bits.
_SINGLE = ("{ .reg .b32 t, u0; .reg .b16 low; .reg .f32 a; .reg .pred f; "
           + _ENTRY.format(bits="$2", up="u0", x="$1") + "mov.b32 {low, $0}, u0; }")


def to_bfloat16(x: jax.Array, bits: jax.Array, *, ptx: bool, paired: bool = True) -> jax.Array:
    """``x`` (float32; finite, or a stored bfloat16 value) stochastically rounded with ``bits`` (the
    entry's :func:`~lopt.learned.stochastic_rounding.role_bits` for this accumulator, uint32 of
    ``x``'s shape), as bfloat16: :func:`~lopt.learned.stochastic_rounding.round_bits_of_state` of
    the bits' top half, bit for bit.

    ``ptx`` (the GPU): as inline PTX over pairs of entries (the module docstring), where the entries a
    thread holds pair up (an even number per thread: a 1-D block of at least two rows per thread, or
    a tile with an even number of columns); with ``paired=False`` (one row per thread) the same
    program per entry, its high half moved out on its own instead of packed.

    Example:
        >>> import jax.numpy as jnp
        >>> bits = jnp.array([0, 0xFFFF0000], jnp.uint32)   # top halves 0 and 0xFFFF
        >>> to_bfloat16(jnp.array([1.0 + 2**-9, 1.0 + 2**-9]), bits, ptx=False).tolist()
        [1.0, 1.0078125]
    """
    if not ptx:
        top = jax.lax.shift_right_logical(bits, jnp.uint32(16))
        return SR.round_bits_of_state(x, top).astype(jnp.bfloat16)
    pattern = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    program, constraints, pack = (_PAIR, "=r,r,r,r,r", 2) if paired else (_SINGLE, "=h,r,r", 1)
    (out,) = plgpu.elementwise_inline_asm(
        program, args=[pattern, bits.astype(jnp.uint32)], constraints=constraints, pack=pack,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.bfloat16)])
    return out
