"""Task normalisation: map a task's raw loss to a task-independent scale.

TaskSet / Metz et al. 2020: a task's initial loss maps to 1, the lowest loss a tuned baseline
reaches maps to 0 (linearly), and the result is clipped to ``[-clip, clip]`` so no task
dominates an average.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["normalize_loss"]


def normalize_loss(loss, initial_loss, best_loss, *, clip: float = 2.0):
    """Linearly maps ``initial_loss -> 1`` and ``best_loss -> 0``, clipped to ``[-clip, clip]``.

    Works on scalars and arrays (broadcasting), inside ``jit``; non-finite losses map to ``clip``.

    Example:
        >>> float(normalize_loss(1.5, initial_loss=2.0, best_loss=1.0))
        0.5
        >>> float(normalize_loss(float("nan"), 2.0, 1.0))
        2.0
    """
    loss = jnp.asarray(loss, jnp.float32)
    scale = jnp.maximum(jnp.asarray(initial_loss, jnp.float32) - best_loss, 1e-12)
    normalized = (loss - best_loss) / scale
    return jnp.where(jnp.isfinite(normalized), jnp.clip(normalized, -clip, clip), clip)
