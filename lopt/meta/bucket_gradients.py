"""How a mixture's per-structure meta-gradients become one outer step.

Every outer step of :class:`lopt.meta.mixture_engine.MixtureEngine` estimates one meta-gradient
per structure (bucket); :func:`combine` turns them into one gradient by the configured
``outer.bucket_weighting``, and :func:`outer_update` takes the outer optimizer's step with it.

* ``"mean"``: the plain mean of the buckets' gradients.
* ``"unit"``: each scaled to unit norm first, so no structure dominates by the scale of its loss.
* ``"pcgrad"``: unit norm, then gradient surgery (:func:`project_conflicts`): each bucket loses
  its components along the buckets it conflicts with, then the mean.

Example:
    >>> import jax.numpy as jnp
    >>> grads = [{"w": jnp.array([3.0, 0.0])}, {"w": jnp.array([0.0, 1.0])}]
    >>> metrics = [{"meta_loss": jnp.float32(v), "train_loss": jnp.float32(0.0), "diverged": 0,
    ...             "resets": 0, "nonfinite_grad": 0} for v in (1.0, 3.0)]
    >>> grad, summary = combine(grads, metrics, weighting="unit")
    >>> grad["w"].tolist(), float(summary["meta_loss"])
    ([0.5, 0.5], 2.0)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

__all__ = ["BUCKET_WEIGHTINGS", "combine", "outer_update", "project_conflicts"]

#: The ways of combining the buckets' meta-gradients (``outer.bucket_weighting``).
BUCKET_WEIGHTINGS = ("mean", "unit", "pcgrad")


def project_conflicts(rows: jax.Array) -> jax.Array:
    """Gradient surgery (PCGrad, Yu et al. 2020) on ``[B, D]`` rows: each row loses its component
    along every other row it conflicts with (negative dot product), in the cyclic order i+1, i+2, ...

    Returns the projected rows; where no two rows conflict they are unchanged.
    """
    n = rows.shape[0]
    squared = jnp.maximum(jnp.sum(rows * rows, axis=1), 1e-24)
    out = []
    for i in range(n):
        g = rows[i]
        for k in range(1, n):
            j = (i + k) % n
            dot = jnp.dot(g, rows[j])
            g = g - jnp.minimum(dot, 0.0) / squared[j] * rows[j]
        out.append(g)
    return jnp.stack(out)


@functools.partial(jax.jit, static_argnames=("weighting",))
def combine(grads: list, metrics: list, weighting: str = "mean") -> tuple[Any, dict]:
    """The buckets' gradients combined (see ``MixtureEngine``'s ``bucket_weighting``) and summary metrics.

    ``"mean"``: the plain mean. ``"unit"``: each scaled to unit norm, then the mean. ``"pcgrad"``:
    unit norm, then each loses its components that conflict with another bucket's, then the mean
    (a step that, to first order, makes no structure worse while any other structure disagrees).
    """
    n = len(grads)
    rows = jnp.stack([jax.flatten_util.ravel_pytree(g)[0] for g in grads])
    unravel = jax.flatten_util.ravel_pytree(grads[0])[1]
    bucket_norms = jnp.linalg.norm(rows, axis=1)
    if weighting in ("unit", "pcgrad"):
        rows = rows / jnp.maximum(bucket_norms, 1e-12)[:, None]
    dots = rows @ rows.T
    conflicts = (jnp.sum(dots < 0) / max(n * (n - 1), 1)).astype(jnp.float32)
    if weighting == "pcgrad":
        rows = project_conflicts(rows)
    mean = rows.mean(axis=0)
    grad = unravel(mean)
    per_bucket = jnp.stack([m["meta_loss"] for m in metrics])
    norm = jnp.linalg.norm(mean)
    summary = {
        "meta_loss": per_bucket.mean(),
        "meta_loss_per_bucket": per_bucket,
        "train_loss": jnp.nanmean(jnp.stack([m["train_loss"] for m in metrics])),
        "diverged": sum(m["diverged"] for m in metrics),
        "resets": sum(m["resets"] for m in metrics),
        "nonfinite_grad": sum(m["nonfinite_grad"] for m in metrics),
        "grad_norm": norm,
        "bucket_grad_norm_max": bucket_norms.max(),
        "bucket_grad_norm_min": bucket_norms.min(),
        "bucket_conflicts": conflicts,
        "buckets": jnp.asarray(n, jnp.int32),
    }
    return grad, summary


def outer_update(outer: optax.GradientTransformationExtraArgs, theta: Any, outer_state: Any, grad: Any,
                 meta_loss: jax.Array) -> tuple[Any, Any]:
    """One outer-optimizer step; the meta-loss is passed as ``loss`` (learned outer optimizers read it)."""
    updates, outer_state = outer.update(grad, outer_state, theta, loss=meta_loss)
    return optax.apply_updates(theta, updates), outer_state
