"""Probe 1: the update of one parameter as a function of its gradient and of each state input.

Everything else (the rest of the tensor, the parameter values, the loss, the other state values)
is held at a snapshot of a real run, as in Maheswaranathan et al. (arXiv 2011.02159), so the
curves show the rule the optimizer applies there: linear regions (a learning rate), saturation
(gradient clipping), sign behaviour, and how accumulated state (momentum, second moments) shifts
the update.

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, record_trace, update_function
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(as_subject(optax.sgd(0.1)), task, key=jax.random.key(0), num_steps=20,
    ...                      num_snapshots=2)
    >>> curve = update_function(trace, gradients=[-1.0, 0.0, 2.0])
    >>> [round(u, 4) + 0.0 for u in curve.updates[0].tolist()]  # update = -0.1 * gradient
    [0.1, 0.0, -0.2]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.layout import leaf_names
from lopt.analysis.probing import new_figure, pick_coordinates, save_figure, update
from lopt.analysis.trace import Trace

__all__ = ["UpdateFunction", "update_function"]


@dataclasses.dataclass(frozen=True)
class UpdateFunction:
    """Update-vs-input curves of one coordinate.

    Attributes:
        label: the optimizer.
        tensor: the params leaf (e.g. ``"0/w"``) and ``coordinate`` its flat index.
        coordinate: flat index in the tensor.
        steps: ``[S]`` the snapshot steps the curves were taken at.
        gradients: ``[G]`` the gradient values tried.
        updates: ``[S, G]`` the coordinate's update for each gradient.
        recorded_gradient: ``[S]`` the gradient the run actually had there.
        slot_names: the per-coordinate state inputs (``"0/mu"``, ``"momentum[2]"``...).
        slot_values: ``[K, G]`` values tried for each state input.
        slot_updates: ``[S, K, G]`` the update as each state input varies (gradient as recorded).
    """

    label: str
    tensor: str
    coordinate: int
    steps: np.ndarray
    gradients: np.ndarray
    updates: np.ndarray
    recorded_gradient: np.ndarray
    slot_names: tuple[str, ...]
    slot_values: np.ndarray
    slot_updates: np.ndarray

    def plot(self, path: str | os.PathLike, *, max_slots: int = 5) -> str:
        """Saves the curves: update vs gradient (one line per snapshot), then vs each state input."""
        shown = min(len(self.slot_names), max_slots)
        ncols = min(3, 1 + shown)
        nrows = -(-(1 + shown) // ncols)
        fig, grid = new_figure(ncols, nrows, width=4.4, height=3.6)
        axes = grid.reshape(1, -1)
        for extra in axes[0, 1 + shown:]:
            extra.axis("off")
        cmap = _snapshot_colors(len(self.steps))
        ax = axes[0, 0]
        for s, step in enumerate(self.steps):
            ax.plot(self.gradients, self.updates[s], color=cmap[s], label=f"step {step}")
            ax.plot([self.recorded_gradient[s]], [np.interp(self.recorded_gradient[s], self.gradients,
                                                            self.updates[s])], "o", color=cmap[s], markersize=3)
        _style(ax, f"update vs gradient\n{self.tensor}[{self.coordinate}] (● recorded)", "gradient")
        ax.legend(fontsize=7)
        for k in range(shown):
            ax = axes[0, 1 + k]
            for s in range(len(self.steps)):
                ax.plot(self.slot_values[k], self.slot_updates[s, k], color=cmap[s])
            _style(ax, f"update vs state input\n{self.slot_names[k]}", self.slot_names[k])
        return save_figure(fig, path, f"{self.label}: update function (rest of the state as recorded)")


def _snapshot_colors(n: int) -> list:
    import matplotlib

    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _style(ax, title: str, xlabel: str) -> None:
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.axvline(0.0, color="gray", linewidth=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("update", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


@functools.partial(jax.jit, static_argnames=("subject", "layout", "leaf"))
def _curves(subject, layout, leaf, snapshot, coordinate, gradients, slot_values):
    params, state, grads, loss = snapshot

    def with_gradient(value):
        g = jax.tree.leaves(grads)
        g[leaf] = g[leaf].reshape(-1).at[coordinate].set(value).reshape(g[leaf].shape)
        u, _ = update(subject, jax.tree.unflatten(jax.tree.structure(grads), g), state, params, loss)
        return jax.tree.leaves(u)[leaf].reshape(-1)[coordinate]

    recorded = layout.get(state, leaf, coordinate)

    def with_slot(k, value):
        new_state = layout.set(state, leaf, coordinate, recorded.at[k].set(value))
        u, _ = update(subject, grads, new_state, params, loss)
        return jax.tree.leaves(u)[leaf].reshape(-1)[coordinate]

    by_gradient = jax.vmap(with_gradient)(gradients)
    if slot_values.shape[0] == 0:  # a stateless optimizer (plain SGD)
        return by_gradient, jnp.zeros(slot_values.shape, jnp.float32), recorded
    ks = jnp.arange(slot_values.shape[0])
    by_slot = jax.vmap(lambda k, vs: jax.vmap(lambda v: with_slot(k, v))(vs))(ks, slot_values)
    return by_gradient, by_slot, recorded


def _resolve_tensor(trace: Trace, tensor: str | int | None) -> int:
    names = leaf_names(trace.snapshot(0).params)
    if tensor is None:
        sizes = [math.prod(np.shape(x)[1:]) for x in jax.tree.leaves(trace.params)]
        return int(np.argmax(sizes))
    if isinstance(tensor, int) and not isinstance(tensor, bool) and 0 <= tensor < len(names):
        return tensor
    if tensor in names:
        return names.index(tensor)
    raise ValueError(f"tensor={tensor!r} is not a params leaf; choose one of {names} (or its index).")


def update_function(trace: Trace, *, tensor: str | int | None = None, coordinate: int | None = None,
                    gradients: Sequence[float] | None = None, snapshots: Sequence[int] | None = None,
                    num_points: int = 101) -> UpdateFunction:
    """Measures the update of one coordinate as its gradient, and each of its state inputs, vary.

    Args:
        trace: a recorded run (:func:`~lopt.analysis.record_trace`); its subject is probed.
        tensor: params leaf name or index (default: the largest tensor).
        coordinate: flat index in that tensor (default: a coordinate of median ``|gradient|``).
        gradients: gradient values to try (default: ``num_points`` values in ``±10 x`` the
            coordinate's largest recorded ``|gradient|``). State inputs are tried over ``±3 x`` their
            largest recorded magnitude (``[0, 3 x]`` for inputs never recorded negative).
        snapshots: which trace snapshots to use (default: first, middle, last).
        num_points: grid size of the default grids.

    Returns:
        The :class:`UpdateFunction`.
    """
    leaf = _resolve_tensor(trace, tensor)
    g_all = np.asarray(jax.tree.leaves(trace.grads)[leaf]).reshape(len(trace.steps), -1)
    if coordinate is None:
        coordinate = int(pick_coordinates(g_all[-1], 1)[0])
    if not 0 <= coordinate < g_all.shape[1]:
        raise ValueError(f"coordinate={coordinate} is out of range for a tensor of {g_all.shape[1]} values.")
    n = len(trace.steps)
    snapshots = sorted({0, n // 2, n - 1}) if snapshots is None else list(snapshots)
    if gradients is None:
        scale = 10.0 * float(np.max(np.abs(g_all[:, coordinate]))) or 1.0
        gradients = np.linspace(-scale, scale, num_points)
    gradients = np.asarray(gradients, np.float32)
    layout = trace.layout()
    recorded_slots = np.stack([np.asarray(layout.get(trace.snapshot(s).opt_state, leaf, coordinate))
                               for s in range(n)]) if layout.width else np.zeros((n, 0))
    slot_scale = 3.0 * np.maximum(np.max(np.abs(recorded_slots), axis=0), 1e-8)
    # Symmetric grids, except for accumulators that are never negative (second moments): [0, scale].
    low = np.where(np.min(recorded_slots, axis=0) >= 0, 0.0, -1.0) if layout.width else np.zeros(0)
    unit = np.linspace(0.0, 1.0, num_points)[None, :]
    slot_values = ((low[:, None] + (1.0 - low[:, None]) * unit) * slot_scale[:, None]).astype(np.float32)
    by_gradient, by_slot = [], []
    for s in snapshots:
        snap = trace.snapshot(s)
        bg, bs, _ = _curves(trace.subject, layout, leaf, (snap.params, snap.opt_state, snap.grads, snap.loss),
                            coordinate, gradients, slot_values)
        by_gradient.append(np.asarray(bg))
        by_slot.append(np.asarray(bs))
    return UpdateFunction(label=trace.subject.label, tensor=leaf_names(trace.snapshot(0).params)[leaf],
                          coordinate=int(coordinate), steps=trace.steps[snapshots], gradients=gradients,
                          updates=np.stack(by_gradient), recorded_gradient=g_all[snapshots, coordinate],
                          slot_names=layout.slot_names, slot_values=slot_values, slot_updates=np.stack(by_slot))
