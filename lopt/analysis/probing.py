"""Pieces every probe shares: calling the update, the effective step size, figure setup."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.subject import Subject

__all__ = ["effective_step_size", "new_figure", "save_figure", "update"]


def update(subject: Subject, grads: Any, state: Any, params: Any, loss: jax.Array) -> tuple[Any, Any]:
    """``subject.optimizer.update(grads, state, params, loss=loss)``."""
    return subject.optimizer.update(grads, state, params, loss=loss)


def effective_step_size(subject: Subject, grads: Any, state: Any, params: Any, loss: jax.Array,
                        leaves: tuple[int, ...] | None = None) -> jax.Array:
    """The update's response to the current gradient, as a learning rate.

    ``-(u(g) - u(0)) / g`` per coordinate (``u(0)``: the update with a zero gradient and the same
    state), the median over coordinates whose ``|g|`` is above 1e-3 of the largest. For SGD with
    learning rate ``eta`` it is exactly ``eta`` (with any schedule); for Adam it is
    ``eta (1 - b1) / (1 - b1^t) / (sqrt(nu_hat) + eps)``, the preconditioned rate.

    Args:
        subject: the optimizer.
        grads, state, params, loss: the update's inputs.
        leaves: which params leaves to take the median over (default all).
    """
    with_g, _ = update(subject, grads, state, params, loss)
    without, _ = update(subject, jax.tree.map(jnp.zeros_like, grads), state, params, loss)
    g_leaves = jax.tree.leaves(grads)
    picks = range(len(g_leaves)) if leaves is None else leaves
    g = jnp.concatenate([g_leaves[j].reshape(-1).astype(jnp.float32) for j in picks])
    du = jnp.concatenate([(jax.tree.leaves(with_g)[j] - jax.tree.leaves(without)[j]).reshape(-1).astype(jnp.float32)
                          for j in picks])
    valid = jnp.abs(g) > 1e-3 * jnp.max(jnp.abs(g))
    ratio = jnp.where(valid, -du / jnp.where(valid, g, 1.0), jnp.nan)
    return jnp.nanmedian(ratio)


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.8):
    """A matplotlib figure (Agg backend) with a grid of axes; returns ``(fig, axes[nrows, ncols])``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike, title: str = "") -> str:
    """Titles, lays out, writes (PNG, 110 dpi) and closes ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def pick_coordinates(values: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of ``count`` coordinates spread over the quantiles of ``|values|`` (none zero if possible)."""
    flat = np.abs(np.asarray(values, np.float64).reshape(-1))
    order = np.argsort(flat)
    nonzero = order[flat[order] > 0]
    pool = nonzero if len(nonzero) >= count else order
    positions = np.linspace(0.2, 0.9, count) if count > 1 else np.array([0.5])
    return np.unique(pool[(positions * (len(pool) - 1)).round().astype(int)])
