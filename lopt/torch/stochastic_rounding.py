"""Stochastic rounding to bfloat16 on PyTorch tensors, bit for bit as :mod:`lopt.learned.stochastic_rounding`.

A learned optimizer's state kept in bfloat16 (``state_dtype="bfloat16"``) is rounded
stochastically after each step with random bits that hash an entry's index in its tensor, the
step and the tensor's position. The JAX path, its fused kernels and this module compute the same
hash, so the same float32 values round to the same bfloat16 values in both frameworks.

The hash runs on int32 tensors that hold the uint32 bit patterns: two's-complement multiplication
and addition wrap modulo ``2**32`` exactly as unsigned arithmetic does, and a logical right shift
is an arithmetic one with the sign-extended bits masked off.

Example:
    >>> import torch
    >>> x = torch.full((100_000,), 1.0 + 2**-10)      # a quarter unit above 1.0 in bfloat16
    >>> bits = random_bits(torch.arange(x.numel()), 7, salt=3)
    >>> r = to_bfloat16(x, split_bits(bits, 0))
    >>> sorted(set(r.float().tolist()))                # only the two neighbours
    [1.0, 1.0078125]
    >>> round(r.float().mean().item(), 4)              # unbiased: 1 + 2**-10
    1.001
"""

from __future__ import annotations

import torch

from lopt.learned import stochastic_rounding as jax_rounding

__all__ = ["entry_bits", "random_bits", "round_columns", "round_rows", "split_bits", "to_bfloat16"]

_MASK = 0xFFFFFFFF
_i32 = torch.int32


def _signed(constant: int) -> int:
    """A uint32 constant as the int32 with the same bits."""
    constant &= _MASK
    return constant - (1 << 32) if constant >= 1 << 31 else constant


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of the uint32 patterns in int32 ``x``."""
    return (x >> bits) & ((1 << (32 - bits)) - 1)


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """An integer tensor's values modulo ``2**32`` as int32 bit patterns (the cast wraps)."""
    return x if x.dtype == _i32 else x.to(_i32)


def _role_multiplier(role: int) -> int:
    """Accumulator ``role``'s odd multiplier (JAX's ``split_bits``), as an int32 value."""
    return _signed(0x9E3779B1 + role * 0x3C6EF372)


def random_bits(index: torch.Tensor, step: int | torch.Tensor, salt: int | torch.Tensor) -> torch.Tensor:
    """32 random bits per entry (int32 holding the uint32 pattern), equal to JAX's ``random_bits``.

    Args:
        index: the entries' flat indices in their tensors (an integer tensor).
        step: the step count the state is rounded for (a Python int, or a 0-d integer tensor, which
            ``torch.compile`` does not specialise on).
        salt: the tensor's position in the parameter list (an int, or an integer tensor
            broadcasting against ``index`` when the entries come from several tensors).

    Example:
        >>> import torch
        >>> bits = random_bits(torch.arange(4), 1, salt=0)
        >>> bits.dtype, len(set(bits.tolist()) | set(random_bits(torch.arange(4), 2, salt=0).tolist()))
        (torch.int32, 8)
    """
    x = _as_int32(index) * _signed(0x9E3779B1)
    constant = 0x27D4EB2F  # the terms given as Python ints, folded here (sums wrap modulo 2**32)
    for value, multiplier in ((step, 0x85EBCA77), (salt, 0xC2B2AE3D)):
        if isinstance(value, torch.Tensor):
            x = x + _as_int32(value) * _signed(multiplier)
        else:
            constant += value * multiplier
    x = x + _signed(constant)
    x ^= _shift_right(x, 16)
    x *= _signed(0x7FEB352D)
    x ^= _shift_right(x, 15)
    x *= _signed(0x846CA68B)
    x ^= _shift_right(x, 16)
    return x


def split_bits(bits: torch.Tensor, role: int) -> torch.Tensor:
    """16 uniform bits for accumulator ``role`` from an entry's 32 (JAX's ``split_bits``).

    Example:
        >>> import torch
        >>> int(split_bits(random_bits(torch.arange(5), 2, 0), 3).max()) < 2**16
        True
    """
    if not 0 <= role < jax_rounding.MAX_ROLES:
        raise ValueError(f"split_bits: role={role!r} must be in 0..{jax_rounding.MAX_ROLES - 1}.")
    return _shift_right(_as_int32(bits) * _role_multiplier(role), 16)


def entry_bits(shape: tuple[int, ...], step: int, salt: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`random_bits` of every entry of a tensor of ``shape`` (row-major index).

    Example:
        >>> entry_bits((2, 3), 1, salt=0).shape
        torch.Size([2, 3])
    """
    numel = 1
    for size in shape:
        numel *= size
    return random_bits(torch.arange(numel, dtype=_i32, device=device), step, salt).reshape(shape)


def to_bfloat16(x: torch.Tensor, bits16: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) stochastically rounded to bfloat16 with the low 16 bits of ``bits16`` (int32).

    Adds the bits to ``x``'s bit pattern and truncates, as JAX's ``round_bits``: a finite value
    that would round past the largest bfloat16 is truncated instead; NaN and infinities stay.

    Example:
        >>> import torch
        >>> to_bfloat16(torch.tensor([1.0 + 2**-9, -3.0]), torch.zeros(2, dtype=torch.int32)).tolist()
        [1.0, -3.0]
    """
    pattern = x.to(torch.float32).view(_i32)
    up = (pattern + (_as_int32(bits16) & 0xFFFF)) & _signed(0xFFFF0000)
    rounded = torch.where(_finite(up), up, pattern & _signed(0xFFFF0000))
    return torch.where(_finite(pattern), rounded, pattern).view(torch.float32).to(torch.bfloat16)


def _finite(pattern: torch.Tensor) -> torch.Tensor:
    """Whether float32 bit patterns (int32) are finite: their exponent is not all ones (cheaper
    than ``torch.isfinite`` on the CPU)."""
    return (pattern & 0x7F800000) != 0x7F800000


def round_rows(m: torch.Tensor, v: torch.Tensor | None, index: torch.Tensor, salt: torch.Tensor,
               step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows' momenta ``m`` ``[n, k]`` (roles ``0..k-1``) and second moment ``v`` ``[n]`` (role ``k``;
    ``None``: none) rounded to bfloat16 with the bits of each row's ``index`` in its tensor, its
    tensor's ``salt`` and ``step`` (a 0-d integer tensor): one function of tensors only, which
    ``torch.compile`` fuses into one pass (``lopt.torch`` with ``compile=True``).

    Example:
        >>> import torch
        >>> m, v = round_rows(torch.ones(4, 3), torch.ones(4), torch.arange(4), torch.zeros(4, dtype=torch.int64),
        ...                   torch.tensor(1))
        >>> m.dtype, v.tolist()
        (torch.bfloat16, [1.0, 1.0, 1.0, 1.0])
    """
    bits = random_bits(index, step, salt)
    # column by column: compiled for the CPU, a [n, k] tile with k = 3 or 6 vectorises over its k
    # columns (16 lanes, k of them used) and hashes each row k times
    columns = [to_bfloat16(m[:, j], split_bits(bits, j)) for j in range(m.shape[1])]
    return torch.stack(columns, dim=1), None if v is None else to_bfloat16(v, split_bits(bits, m.shape[1]))


def round_columns(x: torch.Tensor, bits: torch.Tensor, first_role: int = 0) -> torch.Tensor:
    """Accumulators ``[n, k]`` (float32) as bfloat16, column ``j`` rounded with role ``first_role + j``
    of the rows' ``bits`` ``[n]`` (JAX's ``round_columns``).

    Example:
        >>> import torch
        >>> round_columns(torch.ones(4, 3), random_bits(torch.arange(4), 1, 0)).dtype
        torch.bfloat16
    """
    roles = range(first_role, first_role + x.shape[1])
    if roles.stop > jax_rounding.MAX_ROLES:
        raise ValueError(f"round_columns: roles {first_role}..{roles.stop - 1} exceed {jax_rounding.MAX_ROLES - 1}.")
    multipliers = torch.tensor([_role_multiplier(role) for role in roles], dtype=_i32,
                               device=bits.device)
    return to_bfloat16(x, _shift_right(_as_int32(bits)[:, None] * multipliers, 16))
