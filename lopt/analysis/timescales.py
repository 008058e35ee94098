"""Probe 3: momentum timescales -- linearised state dynamics and the update's impulse response.

Two views of how long the optimizer remembers a gradient (Maheswaranathan et al., arXiv 2011.02159):

* **State dynamics.** For one coordinate, the Jacobian of its next per-coordinate state with
  respect to its current state (gradient, params and the rest of the state held at a recorded
  snapshot). An eigenvalue ``lambda`` is a mode that decays by ``|lambda|`` per step: its
  timescale is ``1 / (1 - |lambda|)`` steps (10 for momentum 0.9, 1,000 for Adam's ``b2 = 0.999``;
  infinite for ``|lambda| >= 1``, a marginal or unstable mode). Eigenvalues are taken at several
  snapshots and coordinates, so slow points of a learned recurrent state show up as a cloud.
* **Impulse response** ("effective momentum"). The derivative of the coordinate's update ``k``
  steps later with respect to its gradient now, replaying the run's later gradients unchanged:
  ``-lr * 0.9^k`` for SGD with momentum 0.9. The area under the response normalised by its
  first value, ``sum_k h_k / h_0``, is the effective averaging window in steps (10 for momentum
  0.9); it also shows what a learned optimizer builds from fixed-decay momenta.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.analysis.layout import leaf_names
from lopt.analysis.probing import new_figure, pick_coordinates, save_figure, update
from lopt.analysis.trace import Trace
from lopt.analysis.update_function import _resolve_tensor

__all__ = ["Timescales", "momentum_timescales", "timescale"]


def timescale(eigenvalues: np.ndarray) -> np.ndarray:
    """``1 / (1 - |lambda|)`` steps, ``inf`` where ``|lambda| >= 1``.

    Example:
        >>> timescale(np.array([0.9, 0.999, 1.0])).round(1).tolist()
        [10.0, 1000.0, inf]
    """
    mag = np.abs(np.asarray(eigenvalues))
    with np.errstate(divide="ignore"):
        return np.where(mag < 1.0, 1.0 / np.maximum(1.0 - mag, 1e-300), np.inf)


@dataclasses.dataclass(frozen=True)
class Timescales:
    """Eigenvalues of the per-coordinate state dynamics and the update's impulse response.

    Attributes:
        label: the optimizer.
        tensor: the params leaf probed.
        slot_names: the per-coordinate state values (the Jacobian's rows and columns).
        eigenvalues: ``[M, K]`` complex eigenvalues, one row per (snapshot, coordinate), sorted by magnitude.
        timescales: ``[M, K]`` :func:`timescale` of each eigenvalue.
        impulse_step: the snapshot step the impulse was applied at.
        impulse_response: ``[C, L]`` d update[t0 + k] / d gradient[t0] per probed coordinate.
        effective_timescale: ``[C]`` ``sum_k h_k / h_0``, the averaging window in steps.
    """

    label: str
    tensor: str
    slot_names: tuple[str, ...]
    eigenvalues: np.ndarray
    timescales: np.ndarray
    impulse_step: int
    impulse_response: np.ndarray
    effective_timescale: np.ndarray

    def dominant(self) -> np.ndarray:
        """``[K]`` median over snapshots and coordinates of each mode's timescale, slowest last."""
        if self.timescales.size == 0:
            return np.zeros((0,))
        return np.sort(np.median(np.sort(self.timescales, axis=1), axis=0))

    def plot(self, path: str | os.PathLike) -> str:
        """Eigenvalues in the complex plane, the timescale histogram, and the impulse response."""
        fig, axes = new_figure(3, width=4.3, height=3.8)
        ax = axes[0, 0]
        circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
        ax.plot(circle.real, circle.imag, color="gray", linewidth=0.6)
        if self.eigenvalues.size:
            ev = self.eigenvalues.reshape(-1)
            ax.plot(ev.real, ev.imag, "o", markersize=3, alpha=0.5)
            lo = min(-0.1, float(ev.real.min()) - 0.05)
            ax.set_xlim(lo, 1.1)
            half = max(0.1, float(np.abs(ev.imag).max()) + 0.05, (1.1 - lo) / 2)
            ax.set_ylim(-half, half)
        ax.set_title(f"state Jacobian eigenvalues\n({len(self.slot_names)} state values per coordinate)", fontsize=9)
        ax.set_xlabel("real", fontsize=8)
        ax.set_ylabel("imaginary", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax = axes[0, 1]
        finite = self.timescales[np.isfinite(self.timescales)]
        if finite.size:
            bins = np.logspace(0, max(1.0, np.log10(finite.max()) + 0.2), 30)
            ax.hist(np.maximum(finite, 1.0), bins=bins)
            ax.set_xscale("log")
        dom = ", ".join(f"{t:.3g}" for t in self.dominant())
        ax.set_title(f"timescales 1/(1-|λ|) (steps)\nmedian per mode: {dom}", fontsize=8)
        ax.set_xlabel("steps", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax = axes[0, 2]
        lags = np.arange(self.impulse_response.shape[1])
        for c, response in enumerate(self.impulse_response):
            first = response[0] if response[0] != 0 else 1.0
            ax.plot(lags, response / first, label=f"coordinate {c}: window {self.effective_timescale[c]:.3g} steps")
        ax.axhline(0.0, color="gray", linewidth=0.6)
        ax.set_title(f"impulse response at step {self.impulse_step}\n"
                     "d update[t0+k] / d gradient[t0], normalised", fontsize=9)
        ax.set_xlabel("lag k (steps)", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(True, alpha=0.3)
        return save_figure(fig, path, f"{self.label}: momentum timescales ({self.tensor})")


@functools.partial(jax.jit, static_argnames=("subject", "layout", "leaf"))
def _jacobians(subject, layout, leaf, snapshot, coordinates):
    params, state, grads, loss = snapshot

    def one(coordinate):
        def step(values):
            _, new_state = update(subject, grads, layout.set(state, leaf, coordinate, values), params, loss)
            return layout.get(new_state, leaf, coordinate)

        return jax.jacfwd(step)(layout.get(state, leaf, coordinate))

    return jax.vmap(one)(coordinates)


@functools.partial(jax.jit, static_argnames=("subject", "leaf", "num_lags"))
def _impulse(subject, leaf, task, train_key, start, coordinates, num_lags):
    params0, state0, step0 = start

    def grad_at(params, step):
        batch = task.sample_batch(jax.random.fold_in(train_key, step), "train")
        return jax.value_and_grad(task.loss)(params, batch)

    def record(carry, t):  # the run's own gradients, to be replayed unchanged
        params, state = carry
        loss, grads = grad_at(params, step0 + t)
        updates, state = update(subject, grads, state, params, loss)
        return (optax.apply_updates(params, updates), state), (grads, loss)

    _, (grads_seq, loss_seq) = jax.lax.scan(record, (params0, state0), jnp.arange(num_lags))

    def replay(delta):
        def body(carry, inputs):
            params, state = carry
            t, grads, loss = inputs
            g = jax.tree.leaves(grads)
            bump = jnp.zeros(g[leaf].size, g[leaf].dtype).at[coordinates].set(delta * (t == 0))
            g[leaf] = g[leaf] + bump.reshape(g[leaf].shape)
            updates, state = update(subject, jax.tree.unflatten(jax.tree.structure(grads), g), state, params, loss)
            return (optax.apply_updates(params, updates), state), jax.tree.leaves(updates)[leaf].reshape(-1)[coordinates]

        return jax.lax.scan(body, (params0, state0), (jnp.arange(num_lags), grads_seq, loss_seq))[1]

    jac = jax.jacfwd(replay)(jnp.zeros(coordinates.shape, jnp.float32))  # [L, C, C]
    return jnp.diagonal(jac, axis1=1, axis2=2).T  # [C, L]


def momentum_timescales(trace: Trace, *, tensor: str | int | None = None, num_coordinates: int = 8,
                        impulse_snapshot: int | None = None, impulse_steps: int = 100) -> Timescales:
    """Linearises the per-coordinate state dynamics at every snapshot and measures the impulse response.

    Args:
        trace: a recorded run; its subject is probed.
        tensor: params leaf name or index (default the largest).
        num_coordinates: coordinates per snapshot for the eigenvalues (and 3 of them for the impulse).
        impulse_snapshot: snapshot at which the impulse is applied (default the middle one).
        impulse_steps: lags of the impulse response (the run is replayed this many steps from the
            snapshot; the trace's task and batch key make the replay exact).

    Returns:
        The :class:`Timescales`.
    """
    if isinstance(impulse_steps, bool) or not isinstance(impulse_steps, int) or impulse_steps < 2:
        raise ValueError(f"impulse_steps={impulse_steps!r} must be an int >= 2.")
    leaf = _resolve_tensor(trace, tensor)
    layout = trace.layout()
    eigs = []
    for s in range(len(trace.steps)):
        snap = trace.snapshot(s)
        coords = pick_coordinates(np.asarray(jax.tree.leaves(snap.grads)[leaf]), num_coordinates)
        if layout.width:
            jac = np.asarray(_jacobians(trace.subject, layout, leaf, (snap.params, snap.opt_state, snap.grads,
                                                                      snap.loss), jnp.asarray(coords)), np.float64)
            for j in jac:
                ev = np.linalg.eigvals(j)
                eigs.append(ev[np.argsort(np.abs(ev))])
    eigenvalues = np.stack(eigs) if eigs else np.zeros((0, 0), np.complex128)
    index = len(trace.steps) // 2 if impulse_snapshot is None else impulse_snapshot
    snap = trace.snapshot(index)
    coords = pick_coordinates(np.asarray(jax.tree.leaves(snap.grads)[leaf]), 3)
    response = np.asarray(_impulse(trace.subject, leaf, trace.task, trace.train_key,
                                   (snap.params, snap.opt_state, jnp.int32(snap.step)), jnp.asarray(coords),
                                   impulse_steps), np.float64)
    first = np.where(response[:, :1] != 0, response[:, :1], np.nan)
    window = np.nansum(response / first, axis=1)
    return Timescales(label=trace.subject.label, tensor=leaf_names(snap.params)[leaf], slot_names=layout.slot_names,
                      eigenvalues=eigenvalues, timescales=timescale(eigenvalues), impulse_step=snap.step,
                      impulse_response=response, effective_timescale=window)
