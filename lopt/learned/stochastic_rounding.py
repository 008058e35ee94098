"""Optimizer state kept in bfloat16 without losing slow accumulators: stochastic rounding.

A learned optimizer's state (momenta, second moments, running sums) is most of its memory and
of the bytes its step moves. Stored as bfloat16 it takes half of both, but plain rounding to the
nearest bfloat16 (8 significant bits) freezes an accumulator with decay ``d`` once its per-step
change ``(1 - d) (g - m)`` is below half a unit in the last place: with ``d = 0.999`` that is any
gradient within ~4x the accumulator. Rounding *stochastically*, up with probability equal to the
fraction of a unit the value lies above the lower neighbour, is unbiased: the expected stored
value is the float32 value, and the accumulator moves as it should on average.

The random bits are a hash of the entry's index in its tensor, the step and a salt (the tensor's
position), computed once per entry and split between its accumulators (:func:`split_bits`), so
the XLA path and a fused kernel that computes the same hash round the same values the same way,
with nothing random stored or passed around.

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.full((100_000,), 1.0 + 2**-10, jnp.float32)   # a quarter unit above 1.0 in bfloat16
    >>> bits = random_bits(jnp.arange(x.size, dtype=jnp.uint32), jnp.uint32(7), salt=3)
    >>> r = to_bfloat16(x, bits)
    >>> sorted(set(r.astype(jnp.float32).tolist()))            # only the two neighbours
    [1.0, 1.0078125]
    >>> round(float(r.astype(jnp.float32).mean()), 4)           # unbiased: 1 + 2**-10
    1.001
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["MAX_ROLES", "STATE_DTYPES", "entry_bits", "random_bits", "role_bits", "round_bits", "round_bits_of_state",
           "round_columns", "split_bits", "storage_dtype", "to_bfloat16"]

#: The storage types a learned optimizer's state may use.
STATE_DTYPES = ("float32", "bfloat16")

_u32 = jnp.uint32
_LOW_BITS = 0xFFFF  # the float32 mantissa bits bfloat16 drops
_HIGH_BITS = 0xFFFF0000


def storage_dtype(owner: str, state_dtype: str) -> jnp.dtype:
    """The array dtype of a learned optimizer's ``state_dtype`` setting, checked.

    Example:
        >>> storage_dtype("MLPLOpt", "bfloat16").itemsize
        2
    """
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"{owner}: state_dtype={state_dtype!r}; use one of {STATE_DTYPES}.")
    return jnp.dtype(state_dtype)


def _c(value: int) -> jax.Array:
    return jnp.asarray(value & 0xFFFFFFFF, _u32)


def random_bits(index: jax.Array, step: Any, salt: int) -> jax.Array:
    """32 pseudo-random bits per entry from its index, the step and a salt (wrapping uint32 arithmetic).

    ``index`` and ``step`` are unsigned 32-bit integers (an array and a scalar); ``salt`` is a Python
    int. The hash is Chris Wellons' ``lowbias32`` finaliser of a linear combination of the three:
    plain integer multiplies, xors and shifts, which lower in XLA and in Pallas kernels alike.

    Example:
        >>> import jax.numpy as jnp
        >>> a = random_bits(jnp.arange(4, dtype=jnp.uint32), jnp.uint32(1), salt=0)
        >>> b = random_bits(jnp.arange(4, dtype=jnp.uint32), jnp.uint32(2), salt=0)
        >>> len(set(a.tolist()) | set(b.tolist()))   # distinct per index and per step
        8
    """
    x = index.astype(_u32) * _c(0x9E3779B1) + jnp.asarray(step).astype(_u32) * _c(0x85EBCA77)
    x = x + _c(salt * 0xC2B2AE3D + 0x27D4EB2F)
    x = x ^ jax.lax.shift_right_logical(x, _c(16))
    x = x * _c(0x7FEB352D)
    x = x ^ jax.lax.shift_right_logical(x, _c(15))
    x = x * _c(0x846CA68B)
    return x ^ jax.lax.shift_right_logical(x, _c(16))


def round_bits(x: jax.Array, bits: jax.Array) -> jax.Array:
    """``x`` (float32) stochastically rounded to a bfloat16 value, still as float32 (low 16 bits 0).

    Adds the low 16 bits of ``bits`` to ``x``'s bit pattern and truncates: the value rounds away
    from zero (in magnitude) with probability equal to the dropped fraction. A finite value that
    would round past the largest bfloat16 is truncated instead; NaN and infinities stay what they are.
    The float32 result converts to bfloat16 exactly, which is what a kernel's store does.
    """
    # x first: a NaN with a full payload wraps past the sign bit to a finite ``up`` (+-0.0)
    return jnp.where(jnp.abs(x) < jnp.inf, round_bits_of_state(x, bits), x)


def round_bits_of_state(x: jax.Array, bits: jax.Array) -> jax.Array:
    """:func:`round_bits` for an ``x`` that is finite or exactly a bfloat16 value (an accumulator
    whose non-finite entries keep their stored bfloat16 value, as a kernel's masked step leaves
    them), in fewer operations: such an ``x`` needs no test of its own, since adding bits below
    the bfloat16 mantissa to a bfloat16-exact pattern leaves its high half, NaN and infinities
    included, as it is. Equal to :func:`round_bits` on every such ``x``. (The GPU kernels write it
    as inline PTX: :mod:`lopt.kernels.bf16_rounding`.)

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([1.0 + 2**-10, jnp.inf, -2.5, 3.0e38 * 1.13])
        >>> bits = jnp.full(4, 0xFFFF, jnp.uint32)
        >>> bool((round_bits_of_state(x, bits) == round_bits(x, bits)).all())
        True
    """
    pattern = jax.lax.bitcast_convert_type(x, _u32)
    up = jax.lax.bitcast_convert_type((pattern + (bits & _c(_LOW_BITS))) & _c(_HIGH_BITS), jnp.float32)
    down = jax.lax.bitcast_convert_type(pattern & _c(_HIGH_BITS), jnp.float32)
    return jnp.where(jnp.abs(up) < jnp.inf, up, down)


def to_bfloat16(x: jax.Array, bits: jax.Array) -> jax.Array:
    """:func:`round_bits` as a bfloat16 array, with a straight-through derivative (identity).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> bits = jnp.zeros(2, jnp.uint32)                         # no random bits: truncation
        >>> to_bfloat16(jnp.array([1.0 + 2**-9, -3.0]), bits).tolist()
        [1.0, -3.0]
        >>> float(jax.grad(lambda v: to_bfloat16(v, bits[0]).astype(jnp.float32))(jnp.float32(1.3)))
        1.0
    """
    x = x.astype(jnp.float32)
    shift = jnp.where(jnp.abs(x) < jnp.inf, round_bits(x, bits) - x, 0.0)  # inf - inf would be NaN
    return (x + jax.lax.stop_gradient(shift)).astype(jnp.bfloat16)


_ROLE_BASE = 0x9E3779B1  # odd
_ROLE_STRIDE = 0x3C6EF372  # even: every role's multiplier is odd
MAX_ROLES = 64


def role_bits(bits: jax.Array, role: Any) -> jax.Array:
    """Accumulator ``role``'s 32 bits from one entry's: ``bits`` times an odd multiplier per role
    (``x -> x * c mod 2**32`` is a bijection for odd ``c``, so each role's bits are uniform).
    :func:`split_bits` is their top half; a fused kernel adds that half to the value's pattern
    itself (one shift-and-add, :mod:`lopt.kernels.bf16_rounding`). ``role`` is an int, or an
    integer array (a kernel's tile of accumulators, one role per column).

    Example:
        >>> import jax.numpy as jnp
        >>> b = random_bits(jnp.arange(3, dtype=jnp.uint32), jnp.uint32(1), salt=0)
        >>> bool((role_bits(b, 2) >> 16 == split_bits(b, 2)).all())
        True
    """
    if isinstance(role, int) and not 0 <= role < MAX_ROLES:
        raise ValueError(f"role_bits: role={role!r} must be in 0..{MAX_ROLES - 1} (one per accumulator).")
    return bits * (_c(_ROLE_BASE) + jnp.asarray(role).astype(_u32) * _c(_ROLE_STRIDE))


def split_bits(bits: jax.Array, role: Any) -> jax.Array:
    """16 uniform bits (in the low half) for accumulator ``role`` from one entry's 32 random bits.

    One hash per entry serves all of its accumulators: the top half of :func:`role_bits`. ``role``
    is an int, or an integer array (a kernel's tile of accumulators, one role per column). The
    roles of one entry are correlated, which biases nothing: each accumulator's rounding is
    unbiased on its own.

    Example:
        >>> import jax.numpy as jnp
        >>> b = random_bits(jnp.arange(3, dtype=jnp.uint32), jnp.uint32(1), salt=0)
        >>> [int(x) < 2**16 for x in split_bits(b, 2)]
        [True, True, True]
        >>> bool((split_bits(b[:, None], jnp.arange(4))[:, 2] == split_bits(b, 2)).all())
        True
    """
    return jax.lax.shift_right_logical(role_bits(bits, role), _c(16))


def entry_bits(shape: tuple[int, ...], step: Any, salt: int) -> jax.Array:
    """:func:`random_bits` of every entry of a tensor of ``shape`` (index: row-major position).

    Example:
        >>> import jax.numpy as jnp
        >>> entry_bits((2, 3), jnp.uint32(1), salt=0).shape
        (2, 3)
    """
    index = jnp.arange(math.prod(shape), dtype=_u32).reshape(shape)
    return random_bits(index, step, salt)


def round_columns(x: jax.Array, bits: jax.Array, first_role: int = 0) -> jax.Array:
    """Accumulators stacked on the last axis (``[..., k]``), each column with its own share of the
    entry's ``bits`` (``[...]``; roles ``first_role ..``), as bfloat16 (:func:`to_bfloat16`).

    Example:
        >>> import jax.numpy as jnp
        >>> m = jnp.full((4, 3), 1.0 + 2**-10)
        >>> round_columns(m, entry_bits((4,), jnp.uint32(2), salt=1)).dtype
        dtype(bfloat16)
    """
    roles = first_role + jnp.arange(x.shape[-1])
    return to_bfloat16(x, split_bits(bits[..., None], roles))
