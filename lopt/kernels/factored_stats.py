"""One pass over a tensor for the ``nominal`` step's statistics (:mod:`lopt.kernels.nominal_step`).

Before its main pass the ``nominal`` step needs, per factored tensor, the Adafactor row and
column means of ``g**2`` (over the tensor's two largest axes, :func:`lopt.learned.features.factored_dims`)
and the mean of ``p**2`` (the parameter input's RMS). Plain XLA computes them as three reductions,
one per reduced axis plus the full one, which read ``g`` twice and ``p`` once: 12 bytes per float32
parameter and three kernel launches. This Pallas kernel reads each ``[rows, cols]`` tile of ``g``
and ``p`` once (8 bytes) and writes, per tile, its row sums, its column sums and its sum of ``p**2``;
XLA then adds those partial sums (about ``1/128 + 1/32`` of the tensor's size).

It applies when the two factored axes are the tensor's last two (every matrix, and convolution
kernels ``[..., in, out]``); other layouts keep the XLA reductions (:func:`applies`).

Example:
    >>> import jax.numpy as jnp
    >>> g = jnp.arange(12.0).reshape(3, 4); p = jnp.ones((3, 4))
    >>> rows, cols, p_square = factored_means(g, p, interpret=True)
    >>> [x.shape for x in (rows, cols)], float(p_square)
    ([(3,), (4,)], 1.0)
    >>> bool(jnp.allclose(rows, jnp.mean(g ** 2, axis=1)) and jnp.allclose(cols, jnp.mean(g ** 2, axis=0)))
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lopt.kernels import tiles
from lopt.learned import features as F

__all__ = ["applies", "factored_means", "tile_shape"]

_f32 = jnp.float32
_TILE_ELEMENTS = 4096  # per program: 32 floats of g and 32 of p per thread at 4 warps
_MAX_COLS = 128  # a wider tensor is split into column tiles (more row partial sums)


def applies(shape: Sequence[int]) -> bool:
    """Whether the one-pass kernel computes this tensor's statistics: rank >= 2, not empty, and
    factored over its last two axes.

    Example:
        >>> applies((64, 32)), applies((3, 3, 16, 32)), applies((32, 4, 64)), applies((5,))
        (True, True, False, False)
    """
    dims = F.factored_dims(shape)
    return dims is not None and math.prod(shape) > 0 and set(dims) == {len(shape) - 2, len(shape) - 1}


def tile_shape(rows: int, cols: int) -> tuple[int, int]:
    """``(tile_rows, tile_cols)`` of a program: powers of two, at least 16 each, about
    4,096 elements, no wider than the tensor needs.

    Example:
        >>> tile_shape(1024, 4096), tile_shape(10, 7), tile_shape(50_000, 3)
        ((32, 128), (16, 16), (256, 16))
    """
    tile_cols = min(tiles.block_size(cols), _MAX_COLS)
    tile_rows = min(max(16, _TILE_ELEMENTS // tile_cols), tiles.block_size(rows))
    return tile_rows, tile_cols


def _kernel(g_ref, p_ref, row_out, col_out, square_out, *, rows, cols, tile_rows, tile_cols):
    """One ``[tile_rows, tile_cols]`` tile of one matrix of the batch: its row sums and column sums
    of ``g**2`` and its sum of ``p**2`` (entries past the matrix's edges read as 0)."""
    program = pl.program_id(0)
    col_tiles, row_tiles = pl.cdiv(cols, tile_cols), pl.cdiv(rows, tile_rows)
    col_tile = program % col_tiles
    row_tile = (program // col_tiles) % row_tiles
    matrix = program // (col_tiles * row_tiles)
    local_rows = row_tile * tile_rows + jax.lax.broadcasted_iota(jnp.int32, (tile_rows, tile_cols), 0)
    col_ids = col_tile * tile_cols + jax.lax.broadcasted_iota(jnp.int32, (tile_rows, tile_cols), 1)
    mask = (local_rows < rows) & (col_ids < cols)
    first_row = matrix * rows + row_tile * tile_rows  # in the [matrices * rows, cols] view
    window = (pl.ds(first_row, tile_rows), pl.ds(col_tile * tile_cols, tile_cols))
    g = plgpu.load(g_ref.at[window], mask=mask, other=0).astype(_f32)
    p = plgpu.load(p_ref.at[window], mask=mask, other=0).astype(_f32)
    square = g * g
    tile_row_ids = row_tile * tile_rows + jax.lax.broadcasted_iota(jnp.int32, (tile_rows,), 0)
    plgpu.store(row_out.at[pl.ds(first_row, tile_rows), col_tile], jnp.sum(square, axis=1),
                mask=tile_row_ids < rows)
    tile_col_ids = col_tile * tile_cols + jax.lax.broadcasted_iota(jnp.int32, (tile_cols,), 0)
    plgpu.store(col_out.at[matrix * row_tiles + row_tile, pl.ds(col_tile * tile_cols, tile_cols)],
                jnp.sum(square, axis=0), mask=tile_col_ids < cols)
    square_out[program] = jnp.sum(p * p)


def factored_means(g: jax.Array, p: jax.Array, *, interpret: bool,
                   cfg: tiles.KernelConfig | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The means of ``g**2`` over the last axis and over the second-to-last, and the mean of
    ``p**2``, from one pass over ``g`` and ``p``.

    Args:
        g: a gradient of rank >= 2 (:func:`applies`), float32 or bfloat16.
        p: the parameter, same shape.
        interpret: Pallas interpret mode (CPU) instead of Triton.
        cfg: launch settings (only ``num_warps`` and ``num_stages`` are used).

    Returns:
        ``(mean over the last axis, shaped g.shape[:-1]; mean over the second-to-last, shaped
        g.shape[:-2] + g.shape[-1:]; mean of p**2, a float32 scalar)``, all float32.
    """
    if not applies(g.shape) or p.shape != g.shape:
        raise ValueError(f"factored_means: shapes {g.shape} and {p.shape} must be equal, of rank >= 2, "
                         "non-empty and factored over their last two axes (see applies()).")
    *batch, rows, cols = g.shape
    matrices = math.prod(batch)
    tile_rows, tile_cols = tile_shape(rows, cols)
    row_tiles, col_tiles = -(-rows // tile_rows), -(-cols // tile_cols)
    programs = matrices * row_tiles * col_tiles
    outputs = [jax.ShapeDtypeStruct((matrices * rows, col_tiles), _f32),
               jax.ShapeDtypeStruct((matrices * row_tiles, cols), _f32),
               jax.ShapeDtypeStruct((programs,), _f32)]
    kernel = functools.partial(_kernel, rows=rows, cols=cols, tile_rows=tile_rows, tile_cols=tile_cols)
    cfg = cfg or tiles.KernelConfig()
    launch = tiles.KernelConfig(num_warps=cfg.num_warps, num_stages=cfg.num_stages)  # a program per tile
    call = tiles.call(kernel, outputs, rows=programs, block=1, cfg=launch, interpret=interpret,
                      name="lopt_factored_stats")
    row_sums, col_sums, squares = call(g.reshape(matrices * rows, cols), p.reshape(matrices * rows, cols))
    over_cols = jnp.sum(row_sums, axis=1).reshape(*batch, rows) / cols
    over_rows = jnp.sum(col_sums.reshape(matrices, row_tiles, cols), axis=1).reshape(*batch, cols) / rows
    return over_cols, over_rows, jnp.sum(squares) / g.size
