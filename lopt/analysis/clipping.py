"""Probe 2: gradient clipping -- the gradient magnitude at which the update saturates.

For one coordinate at a recorded snapshot, the response ``du(g) = u(g) - u(0)`` of its update to
its gradient is linear for small ``g`` (slope ``du'(0)``, a learning rate) and, for an optimizer
that clips, flat beyond some magnitude (``du_sat``). The threshold is where the two asymptotes
meet, ``du_sat / du'(0)``: exactly ``c`` for a hard clip at ``c`` (``optax.clip(c)``), about
``sqrt(nu_hat / (1 - b2))`` for Adam (whose update saturates at about ``lr``), and infinite when
the response keeps growing (SGD). It is measured per tensor and summarised per tensor kind
(weights, biases).

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, clipping, record_trace
    >>> sgd_clip = as_subject(optax.chain(optax.clip(1.0), optax.sgd(0.1)))
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(sgd_clip, task, key=jax.random.key(0), num_steps=20, num_snapshots=2)
    >>> result = clipping(trace)
    >>> [round(t, 3) for t in result.thresholds.tolist()]
    [1.0]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.layout import leaf_names, tensor_kind
from lopt.analysis.probing import new_figure, pick_coordinates, save_figure, update
from lopt.analysis.trace import Trace

__all__ = ["Clipping", "clipping"]

#: The local log-log slope of the response over its last decade below which it counts as saturated.
SATURATION_SLOPE = 0.1


@dataclasses.dataclass(frozen=True)
class Clipping:
    """Update saturation per tensor.

    Attributes:
        label: the optimizer.
        step: the snapshot step.
        tensors: params leaf names; ``kinds`` their kind (weight/bias/scalar).
        kinds: tensor kinds.
        magnitudes: ``[N, G]`` gradient magnitudes tried per tensor (log-spaced).
        responses: ``[N, C, 2, G]`` ``|u(g) - u(0)|`` for ``+g`` and ``-g``, per tensor and probed coordinate.
        slopes: ``[N, C]`` ``du/dg`` at ``g = 0``.
        thresholds: ``[N]`` median over coordinates of the clipping threshold (``inf``: no saturation).
        gradient_rms: ``[N]`` the root mean square of each tensor's recorded gradient.
    """

    label: str
    step: int
    tensors: tuple[str, ...]
    kinds: tuple[str, ...]
    magnitudes: np.ndarray
    responses: np.ndarray
    slopes: np.ndarray
    thresholds: np.ndarray
    gradient_rms: np.ndarray

    def by_kind(self) -> dict[str, float]:
        """Median threshold per tensor kind."""
        return {kind: float(np.median([t for t, k in zip(self.thresholds, self.kinds) if k == kind]))
                for kind in dict.fromkeys(self.kinds)}

    def plot(self, path: str | os.PathLike) -> str:
        """Saves ``|u(g) - u(0)|`` vs ``|g|`` (log-log) per tensor, with the detected thresholds."""
        fig, axes = new_figure(1, width=6.5, height=4.2)
        ax = axes[0, 0]
        import matplotlib

        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, name in enumerate(self.tensors):
            color = colors[i % len(colors)]
            mid = self.responses.shape[1] // 2
            ax.loglog(self.magnitudes[i], self.responses[i, mid, 0], color=color,
                      label=f"{name} ({self.kinds[i]}): threshold {_fmt(self.thresholds[i])}")
            ax.loglog(self.magnitudes[i], self.responses[i, mid, 1], color=color, linestyle=":")
            if np.isfinite(self.thresholds[i]):
                ax.axvline(self.thresholds[i], color=color, linestyle="--", linewidth=0.8)
        ax.set_xlabel("|gradient| of one coordinate (rest of the state as recorded)", fontsize=8)
        ax.set_ylabel("|update(g) - update(0)|", fontsize=8)
        ax.set_title(f"solid: +g, dotted: -g; dashed: clipping threshold (step {self.step})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        return save_figure(fig, path, f"{self.label}: gradient clipping")


def _fmt(value: float) -> str:
    return "none" if not np.isfinite(value) else f"{value:.3g}"


@functools.partial(jax.jit, static_argnames=("subject",))
def _responses(subject, snapshot, coordinates, magnitudes):
    """Per params leaf: ``[C, 2, G]`` responses and ``[C]`` slopes (one program for all leaves)."""
    params, state, grads, loss = snapshot
    treedef = jax.tree.structure(grads)

    def coordinate_update(leaf, coordinate, value):
        g = jax.tree.leaves(grads)
        g[leaf] = g[leaf].reshape(-1).at[coordinate].set(value).reshape(g[leaf].shape)
        u, _ = update(subject, jax.tree.unflatten(treedef, g), state, params, loss)
        return jax.tree.leaves(u)[leaf].reshape(-1)[coordinate].astype(jnp.float32)

    def one(leaf, coordinate, grid):
        at = functools.partial(coordinate_update, leaf, coordinate)
        slope = jax.jvp(at, (jnp.float32(0.0),), (jnp.float32(1.0),))[1]
        response = jnp.abs(jax.vmap(jax.vmap(at))(jnp.stack([grid, -grid])) - at(0.0))
        return response, slope

    return [jax.vmap(functools.partial(one, leaf), in_axes=(0, None))(c, m)
            for leaf, (c, m) in enumerate(zip(coordinates, magnitudes))]


def _threshold(magnitudes: np.ndarray, response: np.ndarray, slope: float) -> float:
    """``du_sat / |du'(0)|`` if the response (both signs) is flat over its last decade, else ``inf``."""
    top = magnitudes[-1]
    decade = int(np.searchsorted(magnitudes, top / 10.0))
    sat = []
    for r in response:
        if not (r[-1] > 0 and r[decade] > 0) or not np.isfinite(r[-1]):
            return float("inf")
        local = np.log(r[-1] / r[decade]) / np.log(top / magnitudes[decade])
        if local > SATURATION_SLOPE:
            return float("inf")
        sat.append(r[-1])
    return float(np.mean(sat) / abs(slope)) if slope != 0 else float("inf")


def clipping(trace: Trace, *, snapshot: int = -1, magnitudes: Sequence[float] | None = None,
             coordinates_per_tensor: int = 3) -> Clipping:
    """Finds the gradient magnitude at which each tensor's update saturates.

    Args:
        trace: a recorded run; its subject is probed at snapshot ``snapshot``.
        snapshot: which snapshot (default the last).
        magnitudes: increasing positive gradient magnitudes (default: 64 log-spaced values from
            ``1e-3`` to ``1e5`` times the tensor's recorded gradient RMS; the grid must extend a
            decade past the threshold for it to be seen).
        coordinates_per_tensor: coordinates probed per tensor (spread over the ``|gradient|`` quantiles).

    Returns:
        The :class:`Clipping` result.
    """
    if magnitudes is not None:
        magnitudes = np.asarray(magnitudes, np.float32)
        if magnitudes.ndim != 1 or len(magnitudes) < 8 or np.any(np.diff(magnitudes) <= 0) or magnitudes[0] <= 0:
            raise ValueError("magnitudes must be at least 8 increasing positive values spanning several decades, "
                             "e.g. np.logspace(-4, 4, 64).")
    snap = trace.snapshot(snapshot)
    names = leaf_names(snap.params)
    leaves = jax.tree.leaves(snap.grads)
    rms, grids, coords = [], [], []
    for g in leaves:
        g = np.asarray(g, np.float64)
        rms.append(float(np.sqrt(np.mean(g**2))) if g.size else 0.0)
        grids.append(magnitudes if magnitudes is not None
                     else (np.logspace(-3, 5, 64) * (rms[-1] or 1.0)).astype(np.float32))
        coords.append(jnp.asarray(np.resize(pick_coordinates(g, coordinates_per_tensor), coordinates_per_tensor)))
    out = _responses(trace.subject, (snap.params, snap.opt_state, snap.grads, snap.loss), coords,
                     [jnp.asarray(m) for m in grids])
    responses = [np.asarray(r, np.float64) for r, _ in out]
    slopes = [np.asarray(s, np.float64) for _, s in out]
    thresholds = [float(np.median([_threshold(grid, r, s) for r, s in zip(resp, slope)]))
                  for grid, resp, slope in zip(grids, responses, slopes)]
    shapes = [np.shape(x) for x in leaves]
    return Clipping(label=trace.subject.label, step=snap.step, tensors=tuple(names),
                    kinds=tuple(tensor_kind(s) for s in shapes), magnitudes=np.stack(grids).astype(np.float64),
                    responses=np.stack(responses), slopes=np.stack(slopes), thresholds=np.asarray(thresholds),
                    gradient_rms=np.asarray(rms))
