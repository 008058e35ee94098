"""Stochastic rounding to bfloat16 on PyTorch tensors, bit for bit as :mod:`lopt.learned.stochastic_rounding`.

A learned optimizer's state kept in bfloat16 (``state_dtype="bfloat16"``) is rounded
stochastically after each step with random bits that hash an entry's index in its tensor, the
step and the tensor's position. The JAX path, its fused kernels and this module compute the same
hash, so the same float32 values round to the same bfloat16 values in both frameworks.

PyTorch has no wrapping unsigned 32-bit arithmetic on every device, so the hash runs on int64
tensors holding values in ``[0, 2**32)``: products are split in 16-bit halves so no intermediate
exceeds 2**49 (no signed overflow), and every result is reduced modulo ``2**32``.

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
from lopt.torch.chunks import Plan

__all__ = ["chunk_bits", "entry_bits", "random_bits", "round_columns", "split_bits", "to_bfloat16"]

_MASK = 0xFFFFFFFF
_i64 = torch.int64


def _mul(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``x * constant mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` and a Python int constant."""
    constant &= _MASK
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK


def _mul_tensor(x: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """:func:`_mul` with a per-entry int64 ``constant`` in ``[0, 2**32)`` (broadcasting)."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK


def random_bits(index: torch.Tensor, step: int, salt: int | torch.Tensor) -> torch.Tensor:
    """32 random bits per entry (int64 in ``[0, 2**32)``), equal to JAX's ``random_bits``.

    Args:
        index: the entries' flat indices in their tensors (an integer tensor).
        step: the step count the state is rounded for (a Python int).
        salt: the tensor's position in the parameter list (an int, or an integer tensor
            broadcasting against ``index`` when the entries come from several tensors).

    Example:
        >>> import torch
        >>> random_bits(torch.arange(3), 1, salt=0).tolist() == random_bits(torch.arange(3), 1, 0).tolist()
        True
    """
    x = _mul(index.to(_i64) & _MASK, 0x9E3779B1) + ((step & _MASK) * 0x85EBCA77 & _MASK)
    if isinstance(salt, torch.Tensor):
        salt_term = (_mul_tensor(salt.to(_i64) & _MASK, torch.tensor(0xC2B2AE3D, dtype=_i64, device=salt.device))
                     + 0x27D4EB2F) & _MASK
    else:
        salt_term = (salt * 0xC2B2AE3D + 0x27D4EB2F) & _MASK
    x = (x + salt_term) & _MASK
    x = x ^ (x >> 16)
    x = _mul(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul(x, 0x846CA68B)
    return x ^ (x >> 16)


def split_bits(bits: torch.Tensor, role: int) -> torch.Tensor:
    """16 uniform bits for accumulator ``role`` from an entry's 32 (JAX's ``split_bits``).

    Example:
        >>> import torch
        >>> int(split_bits(random_bits(torch.arange(5), 2, 0), 3).max()) < 2**16
        True
    """
    if not 0 <= role < jax_rounding.MAX_ROLES:
        raise ValueError(f"split_bits: role={role!r} must be in 0..{jax_rounding.MAX_ROLES - 1}.")
    multiplier = (0x9E3779B1 + role * 0x3C6EF372) & _MASK
    return _mul(bits, multiplier) >> 16


def entry_bits(shape: tuple[int, ...], step: int, salt: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`random_bits` of every entry of a tensor of ``shape`` (row-major index).

    Example:
        >>> entry_bits((2, 3), 1, salt=0).shape
        torch.Size([2, 3])
    """
    numel = 1
    for size in shape:
        numel *= size
    return random_bits(torch.arange(numel, dtype=_i64, device=device), step, salt).reshape(shape)


def to_bfloat16(x: torch.Tensor, bits16: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) stochastically rounded to bfloat16 with the low 16 bits of ``bits16``.

    Adds the bits to ``x``'s bit pattern and truncates, as JAX's ``round_bits``: a finite value
    that would round past the largest bfloat16 is truncated instead; NaN and infinities stay.

    Example:
        >>> import torch
        >>> to_bfloat16(torch.tensor([1.0 + 2**-9, -3.0]), torch.zeros(2, dtype=torch.int64)).tolist()
        [1.0, -3.0]
    """
    x = x.to(torch.float32)
    pattern = x.view(torch.int32).to(_i64) & _MASK
    up, down = (pattern + (bits16 & 0xFFFF)) & 0xFFFF0000, pattern & 0xFFFF0000
    as_float = [(v - ((v >> 31) << 32)).to(torch.int32).view(torch.float32) for v in (up, down)]
    rounded = torch.where(torch.isfinite(as_float[0]), as_float[0], torch.where(torch.isfinite(x), as_float[1], x))
    return rounded.to(torch.bfloat16)


def chunk_bits(plan: Plan, chunk: int, step: int, salts: torch.Tensor) -> torch.Tensor:
    """:func:`random_bits` of the rows of one chunk of ``plan``: each row's flat index in its tensor,
    ``step``, and its tensor's salt (``salts[tensor]``, int64 on the rows' device).

    Example:
        >>> import torch
        >>> plan = Plan([3, 2], rows=5)
        >>> bits = chunk_bits(plan, 0, 4, torch.tensor([7, 9]))
        >>> bool((bits[3:] == entry_bits((2,), 4, salt=9)).all())
        True
    """
    tensor, index = plan.row_positions(chunk, salts.device)
    return random_bits(index, step, salts[tensor])


def round_columns(x: torch.Tensor, bits: torch.Tensor, first_role: int = 0) -> torch.Tensor:
    """Accumulators ``[n, k]`` (float32) as bfloat16, column ``j`` rounded with role ``first_role + j``
    of the rows' ``bits`` ``[n]`` (JAX's ``round_columns``).

    Example:
        >>> import torch
        >>> round_columns(torch.ones(4, 3), random_bits(torch.arange(4), 1, 0)).dtype
        torch.bfloat16
    """
    return torch.stack([to_bfloat16(x[:, j], split_bits(bits, first_role + j)) for j in range(x.shape[1])], dim=1)
