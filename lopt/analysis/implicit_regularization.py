"""Probe 6: implicit regularisation on ``f(x, y) = 1/2 (x - y)^2`` (Metz et al. 2020, arXiv 2009.11243).

Every point of the line ``x = y`` is a minimum, so *which* one an optimizer reaches is decided by
the optimizer, not by the loss. Gradients are ``(x - y, y - x)``: equal and opposite, so any
per-coordinate rule that is odd in the gradient and does not look at the parameter values moves
``x`` and ``y`` by equal and opposite amounts and conserves ``x + y``: SGD, momentum and Adam all
end at ``((x0 + y0) / 2, (x0 + y0) / 2)``, the minimiser closest to the start. An optimizer that
reads the parameter values (lopt's learned optimizers do; so does weight decay) can end elsewhere,
e.g. nearer the origin -- a preference for small-norm solutions the loss does not ask for.

The two parameters are one tensor ``{"w": [x, y]}`` (per-tensor features see both).

Example:
    >>> import numpy as np, optax
    >>> from lopt.analysis import implicit_regularization
    >>> result = implicit_regularization({"sgd": optax.sgd(0.1)}, starts=[[2.0, 0.0]], num_steps=200)
    >>> np.round(result.finals[0, 0], 3).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.analysis.probing import new_figure, save_figure
from lopt.analysis.subject import as_subject

__all__ = ["ImplicitRegularization", "implicit_regularization"]


def _loss(params: dict[str, jax.Array]) -> jax.Array:
    x, y = params["w"][0], params["w"][1]
    return 0.5 * (x - y) ** 2


@dataclasses.dataclass(frozen=True)
class ImplicitRegularization:
    """Trajectories of several optimizers from the same starts.

    Attributes:
        labels: the optimizers.
        starts: ``[N, 2]`` starting points.
        trajectories: ``[O, N, T + 1, 2]`` every optimizer's path from every start.
        finals: ``[O, N, 2]`` where each ended.
        final_loss: ``[O, N]`` the loss there.
        final_norms: ``[O, N]`` the norm of each solution.
        closest_minimizer: ``[N, 2]`` ``((x0 + y0) / 2,) * 2``, the minimiser nearest each start.
    """

    labels: tuple[str, ...]
    starts: np.ndarray
    trajectories: np.ndarray
    finals: np.ndarray
    final_loss: np.ndarray
    final_norms: np.ndarray
    closest_minimizer: np.ndarray

    def norm_ratio(self) -> dict[str, float]:
        """Per optimizer, the median of ``|final| / |closest minimiser|`` (1: no preference; <1: smaller norm)."""
        reference = np.linalg.norm(self.closest_minimizer, axis=-1)
        ok = reference > 1e-6
        return {label: float(np.median(self.final_norms[i][ok] / reference[ok])) for i, label in enumerate(self.labels)}

    def plot(self, path: str | os.PathLike) -> str:
        """Saves the trajectories over the loss contours, and the solution norms per start."""
        import matplotlib

        fig, axes = new_figure(2, width=5.0, height=4.6)
        ax = axes[0, 0]
        span = 1.15 * float(np.nanmax(np.abs(self.trajectories[np.isfinite(self.trajectories)]))) or 1.0
        grid = np.linspace(-span, span, 200)
        xx, yy = np.meshgrid(grid, grid)
        ax.contour(xx, yy, 0.5 * (xx - yy) ** 2, levels=12, colors="lightgray", linewidths=0.6)
        ax.plot(grid, grid, color="black", linewidth=0.8, label="minima x = y")
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, label in enumerate(self.labels):
            color = colors[i % len(colors)]
            for n in range(len(self.starts)):
                ax.plot(self.trajectories[i, n, :, 0], self.trajectories[i, n, :, 1], color=color, linewidth=1.0,
                        alpha=0.8, label=label if n == 0 else None)
                ax.plot(*self.finals[i, n], "o", color=color, markersize=4)
        ax.plot(self.starts[:, 0], self.starts[:, 1], "kx", markersize=5, label="starts")
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("y", fontsize=8)
        ax.set_title("trajectories on f = (x - y)² / 2", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[0, 1]
        reference = np.linalg.norm(self.closest_minimizer, axis=-1)
        order = np.argsort(reference)
        ax.plot(reference[order], reference[order], "k--", linewidth=0.8, label="closest minimiser (no preference)")
        markers = "os^vD<>p"
        for i, label in enumerate(self.labels):
            ax.plot(reference, self.final_norms[i], markers[i % len(markers)], color=colors[i % len(colors)],
                    markersize=5, alpha=0.8, label=f"{label}: median ratio {self.norm_ratio()[label]:.2f}")
        ax.set_xlabel("|closest minimiser| of the start", fontsize=8)
        ax.set_ylabel("|solution reached|", fontsize=8)
        ax.set_title("norm of the solution reached", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        return save_figure(fig, path, "implicit regularisation")


@functools.partial(jax.jit, static_argnames=("optimizer", "num_steps"))
def _trajectories(optimizer, starts, num_steps):
    def run(start):
        params = {"w": start}

        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(_loss)(params)
            updates, state = optimizer.update(grads, state, params, loss=loss)
            params = optax.apply_updates(params, updates)
            return (params, state), params["w"]

        _, path = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)
        return jnp.concatenate([start[None], path])

    return jax.vmap(run)(starts)


def default_starts(count: int = 8, radius: float = 2.0) -> np.ndarray:
    """``count`` points on a circle of ``radius``, none on the line of minima."""
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False) + np.pi / count / 2
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1).astype(np.float32)


def implicit_regularization(optimizers: Mapping[str, Any] | Sequence[Any], *, starts: Any = None,
                            num_steps: int = 300) -> ImplicitRegularization:
    """Trains ``f(x, y) = (x - y)^2 / 2`` with every optimizer from the same starts.

    Args:
        optimizers: ``{label: optimizer}`` or a sequence of optimizers (anything
            :func:`~lopt.analysis.as_subject` takes: optax transformations, subjects, names, paths).
        starts: ``[N, 2]`` starting points (default :func:`default_starts`).
        num_steps: steps per run.

    Returns:
        The :class:`ImplicitRegularization` result.
    """
    items = optimizers.items() if isinstance(optimizers, Mapping) else [(None, o) for o in optimizers]
    subjects = [as_subject(o, label=label, num_steps=num_steps) for label, o in items]
    if not subjects:
        raise ValueError("implicit_regularization: give at least one optimizer.")
    starts = default_starts() if starts is None else np.asarray(starts, np.float32)
    if starts.ndim != 2 or starts.shape[1] != 2:
        raise ValueError(f"starts must have shape [N, 2] (points (x, y)), got {starts.shape}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive int.")
    paths = np.stack([np.asarray(_trajectories(s.optimizer, jnp.asarray(starts), num_steps), np.float64)
                      for s in subjects])
    finals = paths[:, :, -1]
    mid = starts.sum(axis=1, keepdims=True) / 2.0
    return ImplicitRegularization(labels=tuple(s.label for s in subjects), starts=starts.astype(np.float64),
                                  trajectories=paths, finals=finals, final_loss=0.5 * (finals[..., 0] - finals[..., 1]) ** 2,
                                  final_norms=np.linalg.norm(finals, axis=-1),
                                  closest_minimizer=np.concatenate([mid, mid], axis=1).astype(np.float64))
