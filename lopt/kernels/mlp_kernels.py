"""The Pallas programs of the fused ``mlp`` step (:mod:`lopt.kernels.mlp_step` launches them).

A program walks one block of a flattened tensor: its gradient and parameter rows and its
``[block, width]`` momentum tile (:func:`block_inputs`), from which it forms the features
(:func:`features`: the updated momenta, the gradient, the parameter). The reduction pass
(:func:`reduce_block`) writes the block's sums of squared features; the main pass
(:func:`main_kernel`) updates and stores the momenta, runs the network on the feature tile
(:func:`relu`, :func:`row_updates`) and stores the update or the new parameter. With
``following`` set, the main pass launch runs the next tensor's reduction as well.

Example:
    >>> coefficients((0.5, 0.75), 8)[:, :4].tolist()   # momentum, gradient, parameter rows
    [[0.5, 0.75, 0.0, 0.0], [0.5, 0.25, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lopt.kernels import bf16_rounding, tiles
from lopt.learned import stochastic_rounding as SR

__all__ = ["OUT_WIDTH", "block_inputs", "coefficients", "features", "main_kernel", "output_weights",
           "reduce_block", "reduce_kernel", "relu", "row_updates"]

_f32 = jnp.float32
OUT_WIDTH = 8  # bf16 products: the output layer is [block, hidden] @ [hidden, 8], N = 8 the smallest MMA tile


def coefficients(decays: tuple[float, ...], width: int) -> np.ndarray:
    """Rows ``[momentum, gradient, parameter]`` so that ``x = m*c0 + g*c1 + p*c2``.

    Columns: ``k`` updated momenta, the gradient, the parameter, zeros.
    """
    k = len(decays)
    c = np.zeros((3, width), np.float32)
    c[0, :k] = decays
    c[1, :k] = 1.0 - np.asarray(decays, np.float32)
    c[1, k] = 1.0
    c[2, k + 1] = 1.0
    return c


def block_inputs(g_ref, p_ref, m_ref, n, k, block, width, index=None):
    """One block's gradient and parameter rows and momentum tile (``index``: the block; ``None``:
    this program's)."""
    return (tiles.load_rows(g_ref, n, block, index=index), tiles.load_rows(p_ref, n, block, index=index),
            tiles.load_tile(m_ref, n, k, block, width, index=index))


def features(g, p, m, coef_ref):
    """``[block, width]`` features: the updated momenta, the gradient, the parameter (``coef_ref``:
    the rows of :func:`coefficients`; ``p=None``: the parameter's column left 0)."""
    c_m, c_g = (coef_ref[i, :][None, :] for i in range(2))
    x = m * c_m + g[:, None] * c_g
    return x if p is None else x + p[:, None] * coef_ref[2, :][None, :]


def reduce_block(g_ref, p_ref, m_ref, coef_ref, out_ref, *, n, k, block, width, index=None):
    """Block ``index``'s (``None``: this program's) sums of the squared features, written to its
    ``width`` slots of ``out_ref``. The parameter's squares are summed in the rows' 1-D layout, not
    broadcast into the tile first (256 rows, 2 warps: 108 -> 100 instructions per parameter with
    bfloat16 momenta, 56 -> 46 registers; static count, stop 63)."""
    g, p, m = block_inputs(g_ref, p_ref, m_ref, n, k, block, width, index)
    x = features(g, None, m, coef_ref)  # the parameter's column is 0 here
    columns = jax.lax.broadcasted_iota(jnp.int32, (width,), 0)
    sums = jnp.sum(x * x, axis=0) + jnp.where(columns == k + 1, jnp.sum(p * p), 0.0)  # masked rows are zero
    out_ref[pl.ds((pl.program_id(0) if index is None else index) * width, width)] = sums


def reduce_kernel(g_ref, p_ref, m_ref, coef_ref, out_ref, *, n, k, block, width):
    reduce_block(g_ref, p_ref, m_ref, coef_ref, out_ref, n=n, k=k, block=block, width=width)


def relu(z, precision, packed_cvt=False):
    """ReLU of a hidden layer's pre-activations; with bf16 products, of them rounded to bfloat16 (the
    next product rounds its operand so anyway, and ``relu(round(z)) == round(relu(z))``).

    ``packed_cvt`` (bf16 on the GPU): one ``cvt.rn.relu.bf16x2.f32`` per pair of entries, the rounding
    and the ReLU in the conversion (``F2FP.RELU`` on sm_90): 32 fewer instructions per parameter than
    rounding and then taking a packed max (static count at 128 x 2, stop 62). PTX packs its first
    source into the high half, so entry 0 (``$1``) goes second. Interpret mode has no PTX: the CPU
    takes the max after the rounding, the same values."""
    if precision == "bf16" and packed_cvt:
        (h,) = plgpu.elementwise_inline_asm(
            "cvt.rn.relu.bf16x2.f32 $0, $2, $1;", args=[z], constraints="=r,f,f", pack=2,
            result_shape_dtypes=[jax.ShapeDtypeStruct(z.shape, jnp.bfloat16)])
        return h
    if precision == "bf16":
        return jnp.maximum(z.astype(jnp.bfloat16), jnp.bfloat16(0))
    return jax.nn.relu(z)


def row_updates(h, wout_ref, bout_ref, exp_ref, precision, step_mult):
    """The ``[block]`` update ``-direction * exp(log_mag * exp_mult) * step_mult`` of each row of the
    last hidden tile (not yet masked; ``exp_ref``: ``[exp_mult]``, read per row by
    :func:`lopt.kernels.tiles.per_row`, so that the exponential runs once per row in the rows' 1-D
    layout, not in each of the product layout's lanes that hold a row: 464 -> 440 instructions per
    parameter, static count, stop 63).

    With bfloat16 products the two outputs are one more tensor-core product, ``[block, hidden] @
    [hidden, 8]`` (:func:`output_weights`: columns 2-7 zero; ``bout_ref``: 8 biases, added as the
    product's accumulator), split into its even and odd columns: a thread of the product's layout
    holds each adjacent pair, so ``direction`` and ``log_mag`` of a row meet in one thread without a
    shuffle; sums over the 4 column pairs pick column 0's direction and log-magnitude (columns 2-7
    are 0). With TF32 products a
    product costs more than it saves (668 -> 712 at 256 x 4: the float32 operand goes through
    shared memory), so ``wout_ref`` is ``[2, hidden]`` and the outputs are row reductions.
    """
    if precision == "bf16":
        out = tiles.dot(h, wout_ref[...], precision) + bout_ref[...][None, :]
        direction, log_mag = jnp.unstack(out.reshape(out.shape[0], OUT_WIDTH // 2, 2), axis=-1)
        direction, log_mag = jnp.sum(direction, axis=1), jnp.sum(log_mag, axis=1)
    else:
        direction = jnp.sum(h * wout_ref[0, :][None, :], axis=1) + bout_ref[0]
        log_mag = jnp.sum(h * wout_ref[1, :][None, :], axis=1) + bout_ref[1]
    return -(direction * jnp.exp(log_mag * tiles.per_row(exp_ref, h.shape[0])) * step_mult)


def output_weights(w_last, b_last, precision):
    """The last layer's weights and biases as :func:`row_updates` reads them: ``[hidden, 8]`` in bfloat16
    and 8 biases (columns 2-7 zero) for bf16 products, else ``[2, hidden]`` and 2 biases."""
    if precision == "bf16":
        return (jnp.zeros((w_last.shape[0], OUT_WIDTH), _f32).at[:, :2].set(w_last).astype(jnp.bfloat16),
                jnp.zeros((OUT_WIDTH,), _f32).at[:2].set(b_last))
    return w_last.T, b_last


def main_kernel(g_ref, p_ref, m_ref, coef_ref, w0_ref, b0_ref, *refs, n, k, block, width, hidden_layers,
                step_mult, apply, precision, salt, programs, packed_cvt, following=None):
    """The main pass. ``programs``: ``None``, one program per block; else a persistent kernel of
    ``programs`` programs, program ``pid`` taking blocks ``pid, pid + programs, ...``: each
    iteration loads the next block's gradient, parameter and momenta before computing and storing
    the current one, so those loads are in flight during the current block's products.

    ``following``: ``None``, or ``(n, reduce_block)`` of the next tensor, whose reduction pass
    (:func:`reduce_block`) this launch runs too (``KernelConfig(reduction="overlapped")``): its
    gradient, parameter and momenta refs follow the network's inputs, its partial sums are the
    last output, and :func:`lopt.kernels.tiles.interleaved` spreads its blocks among the main
    pass's programs."""
    hidden_refs = refs[: 2 * (hidden_layers - 1)]
    wout_ref, bout_ref, exp_ref, *rest = refs[2 * (hidden_layers - 1):]
    step_ref, *rest = rest if salt is not None else (None, *rest)
    next_refs, rest = (rest[:3], rest[3:]) if following is not None else ((), rest)
    out_ref, m_out_ref, *partial_ref = rest
    load = functools.partial(block_inputs, g_ref, p_ref, m_ref, n, k, block, width)

    # on the GPU (packed_cvt) the finiteness test is inline PTX, one compare per entry
    finite_or = functools.partial(tiles.finite_or, ptx=packed_cvt)

    def block_step(inputs, index):
        g, p, m = inputs
        x = features(g, p, m, coef_ref)
        # lopt.learned.mask_non_finite in this pass: a non-finite new momentum keeps its old value
        # (columns >= k hold other features and are not stored), a non-finite update is 0
        new_m = finite_or(x, m)
        if salt is not None:  # bfloat16 momenta: each column's share of the entry's bits, as the XLA path
            bits = SR.random_bits(tiles.row_ids(block, index=index).astype(jnp.uint32),
                                  tiles.per_row(step_ref, block).astype(jnp.uint32), salt)
            columns = jax.lax.broadcasted_iota(jnp.int32, (block, width), 1)
            new_m = bf16_rounding.to_bfloat16(new_m, SR.role_bits(bits[:, None], columns), ptx=packed_cvt)
        tiles.store_tile(m_out_ref, new_m, n, k, block, index=index)
        # the network's weights are read where they are used, after that store (L1/L2 hits): read
        # before it they are held in registers through the features (162 -> 233 registers at 256 x 4)
        # (each bias is added to its product: Triton's op combining makes it the accumulator)
        h = relu(tiles.dot(x, w0_ref[...], precision) + b0_ref[...][None, :], precision, packed_cvt)
        for i in range(hidden_layers - 1):
            h = relu(tiles.dot(h, hidden_refs[2 * i][...], precision) + hidden_refs[2 * i + 1][...][None, :],
                      precision, packed_cvt)
        update = finite_or(row_updates(h, wout_ref, bout_ref, exp_ref, precision, step_mult), 0.0)
        update = update.astype(out_ref.dtype)
        result = (p + update.astype(_f32)) if apply else update
        tiles.store_rows(out_ref, result, n, block, index=index)

    if following is not None:
        n_next, rows = following
        is_reduce, index = tiles.interleaved(pl.program_id(0), -(-n // block), -(-n_next // rows))
        pl.when(is_reduce)(lambda: reduce_block(*next_refs, coef_ref, *partial_ref, n=n_next, k=k,
                                                 block=rows, width=width, index=index))
        pl.when(jnp.logical_not(is_reduce))(lambda: block_step(load(index), index))
        return
    first = load(None if programs is None else pl.program_id(0))
    if programs is None:
        block_step(first, None)
        return
    pid = pl.program_id(0)

    def body(i, current):
        index = pid + i * programs
        upcoming = load(index + programs)  # issued before this block's arithmetic
        block_step(current, index)
        return upcoming

    iterations = pl.cdiv(pl.cdiv(n, block), programs)  # blocks past the last are fully masked
    jax.lax.fori_loop(0, iterations, body, first)
