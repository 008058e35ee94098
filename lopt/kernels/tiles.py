"""Shared pieces of the fused Pallas steps: tile loads with bounds masks, launch, gradients.

Every kernel here walks a flattened tensor of ``n`` parameters in blocks of ``block``
rows, one program per block. Refs are whole arrays (no ``BlockSpec``): each program
indexes its rows with ``pl.ds`` and masks the tail itself, because the Triton lowering
neither masks blocks that overhang an array nor accepts block shapes whose size is not a
power of two (an accumulator of ``k`` decays is read as a ``[block, width]`` tile with
``width`` a power of two and the columns ``>= k`` masked off).

Example:
    >>> from lopt.kernels.tiles import KernelConfig
    >>> KernelConfig().block
    256
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

__all__ = ["KernelConfig", "call", "dot", "load_rows", "load_tile", "row_ids", "store_rows",
           "store_tile", "with_reference_vjp"]

_PRECISIONS = {
    "tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32,
    "tf32x3": jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
    "ieee": jax.lax.DotAlgorithmPreset.F32_F32_F32,
    "bf16": jax.lax.DotAlgorithmPreset.BF16_BF16_F32,
}


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Launch settings of a fused step (static: they decide what compiles).

    Attributes:
        block: parameters (rows) per program of the main pass; a power of two.
        reduce_block: rows per program of the reduction pass; a power of two.
        num_warps: warps per program on GPU.
        num_stages: software-pipelining depth on GPU (``None``: Triton's default).
        precision: tensor-core precision of in-kernel matrix products on GPU, one of
            ``tf32`` (what XLA uses for float32 products by default on GPU), ``tf32x3``
            (about float32 accuracy), ``ieee``, ``bf16``. Interpret mode always
            computes in float32.
    """

    block: int = 256
    reduce_block: int = 1024
    num_warps: int = 4
    num_stages: int | None = None
    precision: str = "tf32"

    def __post_init__(self) -> None:
        for name in ("block", "reduce_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 16 or (
                    value & (value - 1)):
                raise ValueError(f"KernelConfig: {name}={value!r} must be a power of two >= 16.")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"KernelConfig: num_warps={self.num_warps!r} must be 1, 2, 4, 8 or 16.")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"KernelConfig: precision={self.precision!r} must be one of "
                             f"{sorted(_PRECISIONS)}.")


def row_ids(block: int, width: int | None = None) -> jax.Array:
    """Global row index of each row of this program's block (``[block]`` or ``[block, width]``)."""
    start = pl.program_id(0) * block
    if width is None:
        return start + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
    return start + jax.lax.broadcasted_iota(jnp.int32, (block, width), 0)


def _rows_view(ref: Any, block: int, col: int | None) -> Any:
    rows = pl.ds(pl.program_id(0) * block, block)
    return ref.at[rows] if col is None else ref.at[rows, jnp.int32(col)]


def load_rows(ref: Any, n: int, block: int, col: int | None = None) -> jax.Array:
    """This program's ``[block]`` rows of a 1-D ref (or column ``col`` of a 2-D ref) as float32.

    Rows ``>= n`` read as 0.
    """
    x = plgpu.load(_rows_view(ref, block, col), mask=row_ids(block) < n, other=0)
    return x.astype(jnp.float32)


def store_rows(ref: Any, value: jax.Array, n: int, block: int, col: int | None = None) -> None:
    """Writes ``value`` (cast to the ref's dtype) to this program's rows ``< n`` (of ``col``)."""
    plgpu.store(_rows_view(ref, block, col), value.astype(ref.dtype), mask=row_ids(block) < n)


def _tile_mask(n: int, k: int, block: int, width: int) -> jax.Array:
    cols = jax.lax.broadcasted_iota(jnp.int32, (block, width), 1)
    return (row_ids(block, width) < n) & (cols < k)


def load_tile(ref: Any, n: int, k: int, block: int, width: int) -> jax.Array:
    """This program's rows of an ``[n, k]`` ref as a ``[block, width]`` float32 tile (pad 0)."""
    start = pl.program_id(0) * block
    view = ref.at[pl.ds(start, block), pl.ds(0, width)]
    return plgpu.load(view, mask=_tile_mask(n, k, block, width), other=0).astype(jnp.float32)


def store_tile(ref: Any, value: jax.Array, n: int, k: int, block: int) -> None:
    """Writes the first ``k`` columns of a ``[block, width]`` tile to this program's rows."""
    start = pl.program_id(0) * block
    width = value.shape[1]
    view = ref.at[pl.ds(start, block), pl.ds(0, width)]
    plgpu.store(view, value.astype(ref.dtype), mask=_tile_mask(n, k, block, width))


def finite_or(new: jax.Array, old: Any) -> jax.Array:
    """``new`` where it is finite, else ``old``: :func:`lopt.learned.mask_non_finite` inside a
    kernel (``abs(x) < inf`` is false for NaN and both infinities, and lowers everywhere).

    Example:
        >>> import jax.numpy as jnp
        >>> finite_or(jnp.array([1.0, jnp.nan, -jnp.inf]), 0.0).tolist()
        [1.0, 0.0, 0.0]
    """
    return jnp.where(jnp.abs(new) < jnp.inf, new, old)


def dot(a: jax.Array, b: jax.Array, precision: str | None) -> jax.Array:
    """``a @ b`` in float32 inside a kernel (``precision=None``: plain float32)."""
    algorithm = None if precision is None else _PRECISIONS[precision]
    return jnp.dot(a, b, precision=algorithm, preferred_element_type=jnp.float32)


def call(
    kernel: Callable[..., None],
    out_shape: Sequence[jax.ShapeDtypeStruct],
    *,
    rows: int,
    block: int,
    cfg: KernelConfig,
    interpret: bool,
    aliases: dict[int, int] | None = None,
    name: str,
) -> Callable[..., Any]:
    """``pallas_call`` over ``ceil(rows / block)`` programs, on Triton or in interpret mode."""
    params = None if interpret else plgpu.CompilerParams(num_warps=cfg.num_warps,
                                                         num_stages=cfg.num_stages)
    return pl.pallas_call(
        kernel,
        out_shape=tuple(out_shape),
        grid=(pl.cdiv(rows, block),),
        input_output_aliases=aliases or {},
        interpret=interpret,
        compiler_params=params,
        name=name,
    )


def with_reference_vjp(fused: Callable[..., Any], reference: Callable[..., Any]) -> Callable[..., Any]:
    """``fused`` in the forward pass; gradients from ``reference`` (the XLA path) by ``jax.vjp``.

    Both take the same positional array arguments (pytrees allowed) and return the same
    outputs. Reverse mode (``jax.grad``, TBPTT) recomputes the forward in XLA for the
    residuals, so a differentiated step costs the kernel plus the XLA forward and backward.
    """

    @jax.custom_vjp
    def step(*args):
        return fused(*args)

    def fwd(*args):
        return fused(*args), args

    def bwd(args, cotangent):
        _, vjp = jax.vjp(reference, *args)
        return vjp(cotangent)

    step.defvjp(fwd, bwd)
    return step
