"""Features shared by the learned optimizer architectures, one implementation each.

Everything here is a pure function over arrays or pytrees. Accumulators are float32 and
store their several decays along a trailing axis: for a parameter of shape ``s`` and
``k`` decays, a momentum or second-moment accumulator has shape ``(*s, k)``.

* Accumulators: :func:`momentum_update` (EMAs of the gradient at several decays),
  :func:`rms_update` (EMAs of the squared gradient), :func:`factored_update`
  (Adafactor-style row/column second moments).
* Per-parameter features: :func:`rsqrt` and product features (``m * rsqrt(v)``),
  :func:`factored_features`, :func:`second_moment_normalize` (per-tensor normalisation)
  and :func:`tensor_moments` (per-feature mean and mean square over a tensor, from which
  the normalisation and the per-tensor statistics both come).
* Time: :func:`tanh_time_embedding` (step at several timescales) and
  :func:`fraction_embedding` (fraction of training done, when the horizon is known).
* Loss: :class:`LossNormalizerState` (running mean/variance; normalised loss) and
  :class:`LossBufferState` (running averages at several horizons relative to their
  running minimum).
* Per-tensor statistics: :func:`clip_log_abs`, :func:`safe_norm`, :func:`shape_features`.

Example:
    >>> import jax.numpy as jnp
    >>> from lopt.learned import features as F
    >>> params = {"w": jnp.ones((3, 2))}
    >>> m = F.momentum_init(params, 2)
    >>> m = F.momentum_update(m, params, jnp.asarray([0.5, 0.9]))
    >>> m["w"].shape
    (3, 2, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FRACTION_POINTS",
    "TIME_SCALES",
    "FactoredAccumulator",
    "LossBufferState",
    "LossNormalizerState",
    "clip_log_abs",
    "factored_dims",
    "factored_features",
    "factored_init",
    "factored_scale_factors",
    "factored_update",
    "fraction_embedding",
    "loss_buffer_features",
    "loss_buffer_init",
    "loss_buffer_update",
    "loss_normalizer_feature",
    "loss_normalizer_init",
    "loss_normalizer_mean",
    "loss_normalizer_update",
    "momentum_init",
    "momentum_update",
    "rms_init",
    "rms_update",
    "rsqrt",
    "safe_norm",
    "safe_rsqrt",
    "second_moment_normalize",
    "shape_features",
    "tanh_time_embedding",
    "tensor_moments",
]

Array = jax.Array
PyTree = Any

#: Timescales (in steps) of :func:`tanh_time_embedding`.
TIME_SCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
#: Points (fractions of training) of :func:`fraction_embedding`.
FRACTION_POINTS = (0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)

_f32 = jnp.float32


# ---------------------------------------------------------------------------------------
# Accumulators.


def _decay_array(decays: Any) -> Array:
    return jnp.asarray(decays, _f32)


def momentum_init(params: PyTree, num_decays: int) -> PyTree:
    """Zero momentum accumulators, ``(*p.shape, num_decays)`` float32 per leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> momentum_init({"b": jnp.zeros(4)}, 3)["b"].shape
        (4, 3)
    """
    return jax.tree.map(lambda p: jnp.zeros((*jnp.shape(p), num_decays), _f32), params)


def momentum_update(m: PyTree, grads: PyTree, decays: Any) -> PyTree:
    """``m <- d * m + (1 - d) * g`` for every decay ``d`` (trailing axis).

    Example:
        >>> import jax.numpy as jnp
        >>> m = momentum_update({"x": jnp.zeros((1, 2))}, {"x": jnp.ones(1)}, [0.5, 0.9])
        >>> [round(v, 4) for v in m["x"][0].tolist()]
        [0.5, 0.1]
    """
    d = _decay_array(decays)
    return jax.tree.map(lambda a, g: d * a + (1.0 - d) * g.astype(_f32)[..., None], m, grads)


def rms_init(params: PyTree, num_decays: int) -> PyTree:
    """Zero second-moment accumulators (same layout as :func:`momentum_init`)."""
    return momentum_init(params, num_decays)


def rms_update(v: PyTree, grads: PyTree, decays: Any) -> PyTree:
    """``v <- d * v + (1 - d) * g**2`` for every decay ``d`` (trailing axis).

    Example:
        >>> import jax.numpy as jnp
        >>> rms_update({"x": jnp.zeros((1, 1))}, {"x": jnp.full(1, 2.0)}, [0.5])["x"].tolist()
        [[2.0]]
    """
    d = _decay_array(decays)
    return jax.tree.map(
        lambda a, g: d * a + (1.0 - d) * jnp.square(g.astype(_f32))[..., None], v, grads
    )


def factored_dims(shape: Sequence[int]) -> tuple[int, int] | None:
    """Axes ``(d1, d0)`` to factor a second moment over: the two largest, or ``None``.

    Tensors of rank < 2 are not factored.

    Example:
        >>> factored_dims((3, 5, 4)), factored_dims((7,))
        ((2, 1), None)
    """
    if len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    return int(order[-2]), int(order[-1])


class FactoredAccumulator(NamedTuple):
    """Adafactor-style accumulator of one tensor, trailing axis over decays.

    For factored tensors (rank >= 2, axes ``d1, d0`` from :func:`factored_dims`), ``row``
    is the mean of ``g**2`` over ``d0`` and ``col`` the mean over ``d1``; ``full`` is
    ``None``. For rank < 2, ``full`` is the unfactored accumulator and ``row``/``col`` are
    ``None``.
    """

    row: Array | None
    col: Array | None
    full: Array | None


def factored_init(params: PyTree, num_decays: int) -> PyTree:
    """Zero :class:`FactoredAccumulator` per leaf of ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> acc = factored_init({"w": jnp.zeros((3, 5))}, 2)["w"]
        >>> acc.row.shape, acc.col.shape, acc.full
        ((3, 2), (5, 2), None)
    """

    def one(p):
        shape = jnp.shape(p)
        dims = factored_dims(shape)
        if dims is None:
            return FactoredAccumulator(None, None, jnp.zeros((*shape, num_decays), _f32))
        d1, d0 = dims
        row = jnp.zeros((*np.delete(shape, d0), num_decays), _f32)
        col = jnp.zeros((*np.delete(shape, d1), num_decays), _f32)
        return FactoredAccumulator(row, col, None)

    return jax.tree.map(one, params)


def _is_fac(x: Any) -> bool:
    return isinstance(x, FactoredAccumulator)


def factored_update(
    acc: PyTree, grads: PyTree, decays: Any, *, eps: float = 1e-30
) -> tuple[PyTree, PyTree]:
    """Updates factored accumulators and returns the factored-normalised gradient.

    Args:
        acc: tree of :class:`FactoredAccumulator` (from :func:`factored_init`).
        grads: gradients, same structure as the params.
        decays: ``k`` decays.
        eps: added to ``g**2`` before accumulating.

    Returns:
        ``(new_acc, fac_g)`` where ``fac_g`` per leaf is ``(*g.shape, k)``: the gradient
        divided by the square root of its (factored) second-moment estimate.

    Example:
        >>> import jax.numpy as jnp
        >>> g = {"w": jnp.ones((2, 3))}
        >>> acc, fac_g = factored_update(factored_init(g, 1), g, [0.0])
        >>> fac_g["w"].shape
        (2, 3, 1)
    """
    d = _decay_array(decays)

    def one(g, a):
        g = g.astype(_f32)
        g2 = jnp.square(g)[..., None] + eps
        dims = factored_dims(g.shape)
        if dims is None:
            full = d * a.full + (1.0 - d) * g2
            return FactoredAccumulator(None, None, full), g[..., None] * safe_rsqrt(full)
        d1, d0 = dims
        row = d * a.row + (1.0 - d) * jnp.mean(g2, axis=d0)
        col = d * a.col + (1.0 - d) * jnp.mean(g2, axis=d1)
        new = FactoredAccumulator(row, col, None)
        return new, g[..., None] * _factored_scale(new, g.shape)

    flat_g, treedef = jax.tree.flatten(grads)
    flat_a = treedef.flatten_up_to(acc)
    pairs = [one(g, a) for g, a in zip(flat_g, flat_a)]
    new_acc = treedef.unflatten([p[0] for p in pairs])
    fac_g = treedef.unflatten([p[1] for p in pairs])
    return new_acc, fac_g


def factored_scale_factors(a: FactoredAccumulator, shape: Sequence[int]) -> tuple[Array, Array]:
    """The two factors of the factored scale, unbroadcast: ``(row_factor, col_factor)``.

    ``row_factor = 1/sqrt(row / mean(row))`` (shaped like ``a.row``) and ``col_factor =
    1/sqrt(col)`` (like ``a.col``); their broadcast product is the per-parameter scale.
    A fused kernel reads the two small factors instead of a full-size scale.

    Example:
        >>> import jax.numpy as jnp
        >>> acc = factored_init({"w": jnp.ones((2, 3))}, 1)["w"]
        >>> [f.shape for f in factored_scale_factors(acc, (2, 3))]
        [(2, 1), (3, 1)]
    """
    d1, d0 = factored_dims(shape)
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_mean = jnp.mean(a.row, axis=reduced_d1, keepdims=True)
    return safe_rsqrt(a.row / (row_mean + 1e-9)), safe_rsqrt(a.col)


def _factored_scale(a: FactoredAccumulator, shape: Sequence[int]) -> Array:
    """``1/sqrt(row * col / mean(row))`` broadcast to ``(*shape, k)``."""
    d1, d0 = factored_dims(shape)
    row_factor, col_factor = factored_scale_factors(a, shape)
    return jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)


def factored_features(a: FactoredAccumulator, m: Array, shape: Sequence[int]) -> list[Array]:
    """Per-parameter Adafactor features of one tensor, each ``(*shape, k)``.

    Returns ``[row, col, rsqrt(row), rsqrt(col), m * factored_rsqrt]`` where row and col
    are broadcast to the tensor's shape (for unfactored tensors, both are the full
    accumulator). ``m`` must have the same number of decays as the accumulator.

    Example:
        >>> import jax.numpy as jnp
        >>> acc = factored_init({"w": jnp.ones((2, 3))}, 1)["w"]
        >>> len(factored_features(acc, jnp.ones((2, 3, 1)), (2, 3)))
        5
    """
    dims = factored_dims(shape)
    if dims is None:
        v = a.full
        r = safe_rsqrt(v)
        return [v, v, r, r, m * r]
    d1, d0 = dims
    k = a.row.shape[-1]
    row = jnp.broadcast_to(jnp.expand_dims(a.row, d0), (*shape, k))
    col = jnp.broadcast_to(jnp.expand_dims(a.col, d1), (*shape, k))
    return [row, col, rsqrt(row, 1e-8), rsqrt(col, 1e-8), m * _factored_scale(a, shape)]


# ---------------------------------------------------------------------------------------
# Elementwise helpers.


def rsqrt(x: Array, eps: float = 1e-6) -> Array:
    """``1 / sqrt(x + eps)``."""
    return jax.lax.rsqrt(x + eps)


def safe_rsqrt(x: Array) -> Array:
    """``1 / sqrt(max(x, 1e-9))``."""
    return jax.lax.rsqrt(jnp.maximum(x, 1e-9))


def tensor_moments(x: Array) -> tuple[Array, Array]:
    """Mean and mean square of each feature (last axis) over the tensor (other axes).

    One pass over the tensor gives both the per-tensor normalisation
    (:func:`second_moment_normalize`) and tensor-level statistics (means, variances,
    norms) of every feature.

    Example:
        >>> import jax.numpy as jnp
        >>> mean, msq = tensor_moments(jnp.asarray([[1.0, 2.0], [3.0, 4.0]]))
        >>> mean.tolist(), msq.tolist()
        ([2.0, 3.0], [5.0, 10.0])
    """
    x = x.astype(_f32)
    axes = tuple(range(x.ndim - 1))
    return jnp.mean(x, axis=axes), jnp.mean(jnp.square(x), axis=axes)


def second_moment_normalize(x: Array, *, eps: float = 1e-5, mean_sq: Array | None = None) -> Array:
    """Divides each feature (last axis) by its root-mean-square over the tensor.

    ``x`` is ``(*param_shape, n_features)``; the mean is over every axis but the last,
    so each feature has second moment ~1 within the tensor.

    Args:
        x: features of one tensor.
        eps: added to the mean square.
        mean_sq: precomputed mean square per feature (from :func:`tensor_moments`).

    Example:
        >>> import jax.numpy as jnp
        >>> x = second_moment_normalize(jnp.asarray([[3.0], [4.0]]) * 10)
        >>> round(float(jnp.mean(x ** 2)), 3)
        1.0
    """
    if mean_sq is None:
        axes = tuple(range(x.ndim - 1))
        mean_sq = jnp.mean(jnp.square(x), axis=axes)
    return x * jax.lax.rsqrt(eps + mean_sq)


def clip_log_abs(x: Array, *, scale: float = 1.0) -> Array:
    """``clip(log(1e-8 + |x * scale|), -5, 5)``: a bounded log-magnitude."""
    return jnp.clip(jnp.log(1e-8 + jnp.abs(x * scale)), -5.0, 5.0)


def safe_norm(x: Array) -> Array:
    """L2 norm with a finite gradient at zero."""
    return jnp.sqrt(jnp.sum(jnp.square(x.astype(_f32))) + 1e-16)


def shape_features(shape: Sequence[int], num: int = 4) -> Array:
    """``log(dim) - 1`` of a tensor's shape, padded with size-1 dims to ``num`` entries.

    Tensors of rank > ``num`` fold their trailing dims into the last entry.

    Example:
        >>> [round(v, 3) for v in shape_features((1, 1)).tolist()]
        [-1.0, -1.0, -1.0, -1.0]
    """
    dims = list(shape)
    if len(dims) > num:
        dims = dims[: num - 1] + [int(np.prod(dims[num - 1 :]))]
    dims = dims + [1] * (num - len(dims))
    return jnp.asarray(np.log(np.asarray(dims, np.float64)) - 1.0, _f32)


# ---------------------------------------------------------------------------------------
# Time features.


def tanh_time_embedding(step: Array, timescales: Sequence[float] = TIME_SCALES) -> Array:
    """``tanh(step / s - 1)`` for each timescale ``s``: where training is, in steps.

    Example:
        >>> tanh_time_embedding(0).shape
        (11,)
    """
    s = jnp.asarray(timescales, _f32)
    return jnp.tanh(jnp.asarray(step, _f32) / s - 1.0)


def fraction_embedding(fraction: Array, points: Sequence[float] = FRACTION_POINTS) -> Array:
    """``tanh(10 * (fraction - x))`` at each point ``x``: where training is, as a fraction.

    Example:
        >>> fraction_embedding(0.5).shape
        (9,)
    """
    x = jnp.asarray(points, _f32)
    return jnp.tanh((jnp.asarray(fraction, _f32) - x) * 10.0)


# ---------------------------------------------------------------------------------------
# Loss features.


class LossNormalizerState(NamedTuple):
    """Running (bias-corrected) mean and variance of a loss."""

    mean: Array
    var: Array
    count: Array


def loss_normalizer_init() -> LossNormalizerState:
    """Empty :class:`LossNormalizerState`."""
    return LossNormalizerState(jnp.zeros((), _f32), jnp.zeros((), _f32), jnp.zeros((), jnp.int32))


def loss_normalizer_update(
    state: LossNormalizerState, loss: Array, decay: float
) -> LossNormalizerState:
    """Adds one loss value to the running mean/variance (EMA with ``decay``)."""
    loss = jnp.asarray(loss, _f32)
    mean = decay * state.mean + (1.0 - decay) * loss
    var = decay * state.var + (1.0 - decay) * jnp.square(mean - loss)
    return LossNormalizerState(mean, var, state.count + 1)


def _correction(state: LossNormalizerState, decay: float) -> Array:
    return 1.0 / (1.0 - decay ** state.count.astype(_f32) + 1e-8)


def loss_normalizer_mean(state: LossNormalizerState, decay: float) -> Array:
    """Bias-corrected running mean (0 before the first update)."""
    return state.mean * _correction(state, decay)


def loss_normalizer_feature(state: LossNormalizerState, loss: Array, decay: float) -> Array:
    """``clip((loss - mean) / std, -5, 5)`` under the running statistics in ``state``.

    Example:
        >>> s = loss_normalizer_init()
        >>> for v in [3.0, 2.0, 1.0]:
        ...     s = loss_normalizer_update(s, v, 0.9)
        >>> bool(loss_normalizer_feature(s, 0.5, 0.9) < 0)
        True
    """
    c = _correction(state, decay)
    z = (jnp.asarray(loss, _f32) - state.mean * c) * jax.lax.rsqrt(state.var * c + 1e-8)
    return jnp.clip(z, -5.0, 5.0)


class LossBufferState(NamedTuple):
    """Loss averages at several horizons and the running minimum of each."""

    means: Array
    running_min: Array
    decays: Array
    count: Array


def loss_buffer_init(num_steps: Any, num_horizons: int = 10) -> LossBufferState:
    """Empty :class:`LossBufferState`; half-lives log-spaced from 10 to ``num_steps``.

    ``num_steps`` may be a traced array.
    """
    top = jnp.log10(jnp.maximum(jnp.asarray(num_steps, _f32), 2.0))
    halflife = jnp.logspace(1.0, top, num_horizons)
    return LossBufferState(
        means=jnp.zeros((num_horizons,), _f32),
        running_min=jnp.full((num_horizons,), 1e12, _f32),
        decays=jnp.exp(-1.0 / halflife).astype(_f32),
        count=jnp.zeros((), jnp.int32),
    )


def loss_buffer_update(state: LossBufferState, loss: Array) -> LossBufferState:
    """Adds one loss value (clipped to twice the largest running mean)."""
    d = state.decays
    loss = jnp.asarray(loss, _f32)
    cor = state.means / (1.0 - d ** (state.count + 1).astype(_f32))
    approx_max = jnp.where(state.count == 0, loss, jnp.max(cor))
    loss = jnp.minimum(jnp.abs(approx_max) * 2.0, loss)
    means = state.means * d + loss * (1.0 - d)
    cor = means / (1.0 - d ** (state.count + 1).astype(_f32))
    return LossBufferState(means, jnp.minimum(state.running_min, cor), d, state.count + 1)


def loss_buffer_features(state: LossBufferState) -> Array:
    """Each average relative to the range between its running min and a slower average.

    Returns ``num_horizons - 1`` features in ``[-1, 1]``; zeros for the first 2 steps.
    """
    d = state.decays
    cor = state.means / jnp.maximum(1.0 - d ** state.count.astype(_f32), 1e-12)
    approx_max, cor, running_min = cor[1:], cor[:-1], state.running_min[:-1]
    den = jnp.maximum(1e-8, approx_max - running_min)
    feat = jnp.clip((cor - running_min) / den - 1.0, -1.0, 1.0)
    return jnp.where(state.count <= 2, 0.0, feat)
