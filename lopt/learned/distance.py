"""A running estimate of the distance to the solution, which sets a learning rate on its own.

Prodigy (Mishchenko & Defazio, 2023, arXiv:2306.06101) multiplies an Adam-style step by ``d``, a
lower bound on the distance from the initial parameters ``x0`` to a solution, estimated during
training from the gradients seen so far:

    numerator_t = beta * numerator_{t-1} + w_t * <g_t, x0 - x_t>
    s_t         = beta * s_{t-1}         + w_t * g_t
    d_{t+1}     = max(d_t, numerator_t / ||s_t||_1)

with weights ``w_t = d_t**2 * lr_t``. The estimate starts tiny (``1e-6``) and grows geometrically
while the iterates keep moving in a consistent direction, then stops. A step of ``d * lr * adam``
is invariant to a rescaling of the parameters (``x -> c x`` scales ``d`` by ``c``), which Adam's is
not: this is what lets one untuned optimizer serve tasks whose best Adam learning rates differ by
orders of magnitude. ``NominalLOpt(step_size="distance")`` uses it for its base step.

It costs two more float32 vectors of state per parameter (the running sum ``s`` and ``x0``) and two
reductions over all parameters per step.

Example:
    >>> import jax.numpy as jnp
    >>> from lopt.learned import distance
    >>> params = {"w": jnp.ones(3)}
    >>> state = distance.init(params, initial=1e-6)
    >>> moved = {"w": jnp.full(3, 0.5)}              # params after some steps: x0 - x = 0.5
    >>> state = distance.update(state, {"w": jnp.ones(3)}, moved, weight=1.0, decay=0.999)
    >>> float(state.distance)                        # <g, x0 - x> / ||g||_1 = 1.5 / 3
    0.5
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt.learned.base import keep_finite

__all__ = ["DistanceState", "advance", "dtype_resolution", "init", "start_distance", "update"]

_f32 = jnp.float32


class DistanceState(NamedTuple):
    """State of the distance estimate.

    Attributes:
        distance: float32 scalar ``d``, non-decreasing.
        numerator: float32 scalar, the weighted sum of ``<g, x0 - x>``.
        grad_sum: per leaf float32, the weighted sum of gradients ``s``.
        params0: per leaf float32, the initial parameters ``x0``.
    """

    distance: jax.Array
    numerator: jax.Array
    grad_sum: Any
    params0: Any


def init(params: Any, *, initial: float, relative: float = 0.0) -> DistanceState:
    """Starts the estimate with ``x0 = params``.

    Args:
        params: the initial parameters ``x0``.
        initial: the smallest starting estimate (Prodigy: ``1e-6``).
        relative: the estimate starts at ``max(initial, relative * rms(x0))``, the RMS taken over
            all entries of ``x0``; so a rescaled problem (``x -> c x``) starts from a rescaled
            estimate, and the estimate need not grow from ``initial`` through many steps where
            ``x0`` already shows the parameters' scale. 0: start at ``initial``. The factor is
            at least the resolution of the coarsest floating dtype in ``params``
            (:func:`dtype_resolution`: 0.0078 for bfloat16, below any useful ``relative`` for
            float32): a smaller first step would not change low-precision parameters at all,
            and the estimate, which grows from their movement, would stall.
    """
    if not initial > 0:
        raise ValueError(f"distance.init: initial={initial!r} must be > 0 (Prodigy uses 1e-6).")
    if not relative >= 0:
        raise ValueError(f"distance.init: relative={relative!r} must be >= 0 (0 turns it off).")
    return DistanceState(start_distance(params, initial=initial, relative=relative), jnp.zeros((), _f32),
                         jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _f32), params),
                         jax.tree.map(lambda p: jnp.asarray(p, _f32), params))


def start_distance(params: Any, *, initial: float, relative: float) -> jax.Array:
    """``max(initial, relative * rms(params))`` over every entry of ``params`` (see :func:`init`).

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(start_distance({"w": jnp.full(4, 2.0)}, initial=1e-6, relative=1e-3)), 6)
        0.002
    """
    leaves = jax.tree.leaves(params)
    count = sum(jnp.size(p) for p in leaves)
    if not relative or not count:
        return jnp.asarray(initial, _f32)
    relative = max(relative, dtype_resolution(leaves))
    rms = jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(p, _f32))) for p in leaves) / count)
    return jnp.maximum(jnp.asarray(initial, _f32), relative * rms)


def dtype_resolution(leaves: Any) -> float:
    """The machine epsilon of the coarsest floating dtype among ``leaves`` (0 when none is floating).

    Example:
        >>> import jax.numpy as jnp
        >>> dtype_resolution([jnp.zeros(2, jnp.float32), jnp.zeros(2, jnp.bfloat16)])
        0.0078125
    """
    return max((float(jnp.finfo(jnp.result_type(p)).eps) for p in jax.tree.leaves(leaves)
                if jnp.issubdtype(jnp.result_type(p), jnp.floating)), default=0.0)


def next_grad_sum(grad_sum: jax.Array, grads: jax.Array, *, weight: Any, decay: float) -> jax.Array:
    """One tensor's new running gradient sum ``decay * s + weight * g``, in float32.

    Example:
        >>> import jax.numpy as jnp
        >>> next_grad_sum(jnp.ones(2), jnp.array([1.0, -1.0]), weight=2.0, decay=0.5).tolist()
        [2.5, -1.5]
    """
    return decay * grad_sum.astype(_f32) + weight * grads.astype(_f32)


def update(state: DistanceState, grads: Any, params: Any, *, weight: Any, decay: float) -> DistanceState:
    """One step of the estimate from this step's gradients at ``params`` (before the step).

    Args:
        state: the previous state.
        grads: this step's gradients.
        params: the parameters the gradients were taken at.
        weight: this step's weight ``w_t`` (``d_t**2`` times the base learning rate).
        decay: ``beta`` of both running sums (Prodigy: ``sqrt(b2)``).

    Returns:
        The new state; its ``distance`` is never below the previous one. A non-finite entry of the
        new gradient sum keeps its old value before ``||sum||_1`` is taken (a caller's step then
        reads the old sum once, where it writes the new one: no copy of it first). The estimate is
        as with the raw sum: a non-finite entry comes from a non-finite gradient entry, which makes
        ``<g, x0 - x>`` and so the new estimate non-finite, for the caller to keep the old one
        (up to a finite ``weight * g`` that overflows).
    """
    leaves = zip(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(state.params0))
    dot = sum(jnp.vdot(g.astype(_f32), (p0 - p.astype(_f32))) for g, p, p0 in leaves)
    grad_sum = jax.tree.map(lambda s, g: keep_finite(next_grad_sum(s, g, weight=weight, decay=decay), s),
                            state.grad_sum, grads)
    l1 = sum(jnp.sum(jnp.abs(s)) for s in jax.tree.leaves(grad_sum))
    return advance(state, dot=dot, grad_sum=grad_sum, l1=l1, weight=weight, decay=decay)


def advance(state: DistanceState, *, dot: Any, grad_sum: Any, l1: Any, weight: Any,
            decay: float) -> DistanceState:
    """The new state from this step's sums, computed elsewhere (e.g. by a fused kernel).

    :func:`update` is this function after computing, over all parameters, ``dot = <g, x0 - x>``,
    the new running gradient sum ``grad_sum = decay * s + weight * g`` and ``l1 = ||grad_sum||_1``.

    Example:
        >>> import jax.numpy as jnp
        >>> state = init({"w": jnp.ones(2)}, initial=1e-6)
        >>> new = advance(state, dot=3.0, grad_sum={"w": jnp.ones(2)}, l1=2.0, weight=1.0, decay=0.5)
        >>> float(new.distance), float(new.numerator)        # 3 / 2
        (1.5, 3.0)
    """
    numerator = decay * state.numerator + weight * dot
    estimate = jnp.where(l1 > 0, numerator / jnp.where(l1 > 0, l1, 1.0), 0.0)
    distance = jnp.maximum(state.distance, jnp.where(jnp.isfinite(estimate), estimate, 0.0))
    return DistanceState(distance, numerator, grad_sum, state.params0)
