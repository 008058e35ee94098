"""Probe: the update at rest -- what an optimizer does where the gradient and its history are zero.

A hand-designed optimizer's update vanishes at a stationary point: with a zero gradient and no
gradient history (zero momenta and second moments) Adam, SGD and their relatives do not move.
A learned optimizer need not: its network may output a direction that does not depend on the
gradient (a bias, or a function of the parameter value alone), so the update has a fixed point
away from the stationary point and the optimizer cannot converge there. The probe measures that
*drift*: at every recorded snapshot, the update with a zero gradient from the snapshot's state
with every per-coordinate slot (:class:`~lopt.analysis.layout.StateLayout`: momenta, second
moments, running sums) set to zero and everything global (step counters, per-tensor statistics,
a distance estimate) kept, as an RMS per tensor and relative to the RMS of the update the
optimizer actually took at that snapshot.

lopt's pretrained weights drifted by a few percent of their own step until stop 36 (the learned
direction at zero gradient inputs was about -0.01 times the parameter over its tensor's RMS), which
is what kept them from converging on Rosenbrock; ``NominalLOpt(anchored_direction=True)``
subtracts that part and drifts by exactly zero.

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, record_trace, rest_drift
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(as_subject(optax.adam(1e-2)), task, key=jax.random.key(0), num_steps=20,
    ...                      num_snapshots=2)
    >>> float(rest_drift(trace).relative().max())
    0.0
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.layout import leaf_names, tensor_kind
from lopt.analysis.probing import new_figure, save_figure, update
from lopt.analysis.trace import Trace

__all__ = ["RestDrift", "rest_drift"]


@dataclasses.dataclass(frozen=True)
class RestDrift:
    """The update at rest, per snapshot and tensor.

    Attributes:
        label: the optimizer.
        steps: ``[S]`` snapshot steps.
        tensors: params leaf names; ``kinds`` their kind (weight/bias/scalar).
        kinds: tensor kinds.
        drift: ``[S, N]`` RMS of the update at rest.
        step_rms: ``[S, N]`` RMS of the update taken at the snapshot (its recorded gradient and state).
    """

    label: str
    steps: np.ndarray
    tensors: tuple[str, ...]
    kinds: tuple[str, ...]
    drift: np.ndarray
    step_rms: np.ndarray

    def relative(self) -> np.ndarray:
        """``[S, N]`` drift over the RMS of the step taken (0 where both are 0, inf where only the step is)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.drift / self.step_rms
        return np.where(self.drift == 0, 0.0, ratio)

    def plot(self, path: str | os.PathLike) -> str:
        """Saves the relative drift of every tensor against the snapshot step."""
        fig, axes = new_figure(1, width=6.5, height=4.0)
        ax = axes[0, 0]
        relative = self.relative()
        for i, name in enumerate(self.tensors):
            values = np.where(relative[:, i] > 0, relative[:, i], np.nan)
            ax.plot(self.steps, values, marker="o", markersize=3, label=f"{name} ({self.kinds[i]})")
        if np.any(relative > 0):
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no drift: the update at rest is exactly 0", ha="center", transform=ax.transAxes)
        ax.set_xlabel("step of the snapshot", fontsize=8)
        ax.set_ylabel("RMS update at rest / RMS update taken", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        if len(self.tensors) <= 12 and np.any(relative > 0):
            ax.legend(fontsize=7)
        return save_figure(fig, path, f"{self.label}: update at a stationary point with no gradient history")


def _rms(tree) -> list[jax.Array]:
    return [jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))) if x.size else jnp.zeros(()) for x in
            jax.tree.leaves(tree)]


def rest_drift(trace: Trace) -> RestDrift:
    """Measures the update at rest at every snapshot of ``trace`` (see the module docstring).

    Args:
        trace: a recorded run (:func:`lopt.analysis.record_trace`).

    Returns:
        The :class:`RestDrift` result.
    """
    layout = trace.layout()
    subject = trace.subject

    @jax.jit
    def one(params, state, grads, loss):
        flat = list(jax.tree.leaves(state))
        for slot in layout.slots:
            flat[slot.index] = jnp.zeros_like(flat[slot.index])
        at_rest = jax.tree.unflatten(layout.treedef, flat)
        resting, _ = update(subject, jax.tree.map(jnp.zeros_like, grads), at_rest, params, loss)
        taken, _ = update(subject, grads, state, params, loss)
        return jnp.stack(_rms(resting)), jnp.stack(_rms(taken))

    drift, step_rms = jax.lax.map(lambda xs: one(*xs), (trace.params, trace.opt_state, trace.grads,
                                                         jnp.asarray(trace.loss)))
    first = trace.snapshot(0)
    return RestDrift(label=subject.label, steps=np.asarray(trace.steps), tensors=tuple(leaf_names(first.params)),
                     kinds=tuple(tensor_kind(np.shape(p)) for p in jax.tree.leaves(first.params)),
                     drift=np.asarray(drift, np.float64), step_rms=np.asarray(step_rms, np.float64))
