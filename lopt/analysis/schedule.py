"""Probe 4: the learning-rate schedule -- the effective step size as a function of the step counter.

The effective step size is :func:`~lopt.analysis.probing.effective_step_size`, the update's
response to the current gradient as a learning rate (exactly ``eta_t`` for SGD under any optax
schedule). Two curves:

* **Schedule** (counterfactual): one recorded snapshot -- gradient, params, float state held --
  with every integer counter in the optimizer state set to ``t``, for ``t`` over the horizon.
  Only the optimizer's notion of time changes, so warm-up and decay appear by themselves: an
  optax schedule is recovered exactly, a learned optimizer's time features show as a curve.
* **Along the run**: the same measure at every snapshot of the trace, where the state and the
  gradients change too (schedule and adaptation together; see :mod:`lopt.analysis.adaptation`).

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, learning_rate_schedule, record_trace
    >>> sgd = as_subject(optax.sgd(optax.linear_schedule(1.0, 0.0, 100)))
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(sgd, task, key=jax.random.key(0), num_steps=100, num_snapshots=2)
    >>> sched = learning_rate_schedule(trace, steps=[0, 50, 100])
    >>> [round(x, 4) for x in sched.step_size.tolist()]
    [1.0, 0.5, 0.0]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.probing import effective_step_size, new_figure, save_figure
from lopt.analysis.trace import Trace

__all__ = ["Schedule", "learning_rate_schedule"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Effective step size over the horizon.

    Attributes:
        label: the optimizer.
        snapshot_step: the snapshot whose state was held for the counterfactual curve.
        steps: ``[T]`` counter values tried.
        step_size: ``[T]`` effective step size with the counters at each value.
        has_counter: whether the optimizer state has an integer counter (no counter: no schedule).
        run_steps: ``[S]`` the trace's snapshot steps.
        run_step_size: ``[S]`` effective step size at each snapshot of the run.
    """

    label: str
    snapshot_step: int
    steps: np.ndarray
    step_size: np.ndarray
    has_counter: bool
    run_steps: np.ndarray
    run_step_size: np.ndarray

    def plot(self, path: str | os.PathLike) -> str:
        """Saves the schedule (counterfactual) and the step size along the run."""
        fig, axes = new_figure(1, width=6.5, height=4.0)
        ax = axes[0, 0]
        ax.plot(self.steps, self.step_size, label=f"schedule: state of step {self.snapshot_step}, counter = t")
        ax.plot(self.run_steps, self.run_step_size, "o--", markersize=3, label="along the run (state as recorded)")
        ax.set_xlabel("step t", fontsize=8)
        ax.set_ylabel("effective step size  -(u(g) - u(0)) / g", fontsize=8)
        positive = np.all(self.step_size[np.isfinite(self.step_size)] > 0) and np.all(
            self.run_step_size[np.isfinite(self.run_step_size)] > 0)
        if positive and np.nanmax(self.step_size) > 20 * np.nanmin(self.step_size):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        note = "" if self.has_counter else " (no step counter in the state: no schedule)"
        return save_figure(fig, path, f"{self.label}: learning-rate schedule{note}")


@functools.partial(jax.jit, static_argnames=("subject", "layout"))
def _over_counters(subject, layout, snapshot, steps):
    params, state, grads, loss = snapshot
    return jax.vmap(lambda t: effective_step_size(subject, grads, layout.set_counters(state, t), params, loss))(steps)


@functools.partial(jax.jit, static_argnames=("subject",))
def _at(subject, snapshot):
    params, state, grads, loss = snapshot
    return effective_step_size(subject, grads, state, params, loss)


def learning_rate_schedule(trace: Trace, *, steps: Sequence[int] | None = None, snapshot: int = -1,
                           num_points: int = 101) -> Schedule:
    """Measures the effective step size as the optimizer's step counter sweeps the horizon.

    Args:
        trace: a recorded run; its subject is probed.
        steps: counter values (default ``num_points`` values from 0 to the trace's length).
        snapshot: the snapshot whose state is held (default the last).
        num_points: size of the default grid.

    Returns:
        The :class:`Schedule`.
    """
    steps = np.linspace(0, trace.num_steps, num_points).round() if steps is None else np.asarray(steps)
    if steps.ndim != 1 or steps.size == 0 or np.any(steps < 0):
        raise ValueError(f"steps must be a non-empty 1-D sequence of step counts >= 0, got {steps!r}.")
    layout = trace.layout()
    snap = trace.snapshot(snapshot)
    inputs = (snap.params, snap.opt_state, snap.grads, snap.loss)
    curve = np.asarray(_over_counters(trace.subject, layout, inputs, jnp.asarray(steps, jnp.int32)), np.float64)
    along = []
    for s in range(len(trace.steps)):
        sn = trace.snapshot(s)
        along.append(float(_at(trace.subject, (sn.params, sn.opt_state, sn.grads, sn.loss))))
    return Schedule(label=trace.subject.label, snapshot_step=snap.step, steps=steps.astype(np.int64),
                    step_size=curve, has_counter=bool(layout.counters), run_steps=trace.steps,
                    run_step_size=np.asarray(along))
