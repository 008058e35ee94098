"""A training trace: snapshots of (params, optimizer state, gradient, loss) from a real run.

The probes hold the optimizer's inputs "at values recorded from a real training run": they
start from the snapshots of a :class:`Trace`. :func:`record_trace` trains a task with the
subject optimizer exactly as :func:`lopt.inner.train` does (batch ``t`` is drawn with
``fold_in(train_key, t)``), so a probe can also replay any stretch of the run.

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, record_trace
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(as_subject(optax.adam(0.1)), task, key=jax.random.key(0), num_steps=100,
    ...                      num_snapshots=5)
    >>> trace.steps.tolist()
    [0, 20, 40, 60, 80]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.layout import StateLayout
from lopt.analysis.subject import Subject
from lopt.inner.training import init_state, run_steps
from lopt.tasks.base import Task

__all__ = ["Snapshot", "Trace", "record_trace"]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The optimizer's inputs at one step of a run: ``update(grads, opt_state, params, loss=loss)``."""

    step: int
    params: Any
    opt_state: Any
    grads: Any
    loss: jax.Array


@dataclasses.dataclass(frozen=True)
class Trace:
    """Snapshots of one training run (leading axis: snapshot) and its training-loss curve.

    Attributes:
        subject: the optimizer that trained.
        task: the task it trained.
        train_key: the run's batch key (batch ``t`` is ``fold_in(train_key, t)``).
        steps: ``[S]`` the step of every snapshot.
        params, opt_state, grads: stacked pytrees ``[S, ...]``: the inputs of update at each snapshot.
        loss: ``[S]`` the training loss of the snapshot's batch.
        train_loss: ``[num_steps]`` the training loss at every step.
    """

    subject: Subject
    task: Task
    train_key: jax.Array
    steps: np.ndarray
    params: Any
    opt_state: Any
    grads: Any
    loss: np.ndarray
    train_loss: np.ndarray

    @property
    def num_steps(self) -> int:
        """Length of the recorded run."""
        return int(self.train_loss.shape[0])

    def snapshot(self, index: int) -> Snapshot:
        """Snapshot ``index`` (negative counts from the end)."""
        if not -len(self.steps) <= index < len(self.steps):
            raise ValueError(f"snapshot index {index} is out of range: the trace has {len(self.steps)} snapshots.")
        pick = lambda tree: jax.tree.map(lambda x: x[index], tree)
        return Snapshot(int(self.steps[index]), pick(self.params), pick(self.opt_state), pick(self.grads),
                        jnp.asarray(self.loss[index]))

    def layout(self) -> StateLayout:
        """The per-coordinate layout of the optimizer state."""
        first = self.snapshot(0)
        return StateLayout.of(first.opt_state, first.params)


@functools.partial(jax.jit, static_argnames=("optimizer", "num_steps"))
def _advance(task, optimizer, state, key, num_steps):
    return run_steps(task, optimizer, state, key=key, num_steps=num_steps)


@jax.jit
def _inputs(task, state, key):
    batch = task.sample_batch(jax.random.fold_in(key, state.step), "train")
    loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
    return loss, grads


def record_trace(subject: Subject, task: Task, *, key: jax.Array, num_steps: int = 1000,
                 num_snapshots: int = 20) -> Trace:
    """Trains ``task`` with ``subject`` for ``num_steps`` steps, keeping ``num_snapshots`` snapshots.

    Snapshots are evenly spaced (``step = i * num_steps // num_snapshots``); each holds the state
    *before* that step's update and the gradient and loss the update receives.

    Args:
        subject: the optimizer (see :func:`~lopt.analysis.as_subject`).
        task: a lopt task (small ones keep probes cheap).
        key: PRNG key of the run (split into init and batch keys as :func:`lopt.inner.train` does).
        num_steps: length of the run.
        num_snapshots: how many snapshots to keep (at most ``num_steps``).

    Returns:
        The :class:`Trace`.

    Raises:
        ValueError: ``num_steps`` or ``num_snapshots`` not positive, or more snapshots than steps.
    """
    if not isinstance(subject, Subject):
        raise TypeError(f"record_trace takes a Subject (lopt.analysis.as_subject(...)), got {type(subject).__name__}.")
    if not isinstance(task, Task):
        raise TypeError(f"record_trace takes a lopt Task (lopt.tasks.build(cfg)), got {type(task).__name__}.")
    for name, value in (("num_steps", num_steps), ("num_snapshots", num_snapshots)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"record_trace: {name}={value!r} must be a positive int.")
    if num_snapshots > num_steps:
        raise ValueError(f"record_trace: num_snapshots={num_snapshots} exceeds num_steps={num_steps}; "
                         "keep at most one snapshot per step.")
    init_key, train_key, _ = jax.random.split(key, 3)
    state = init_state(task, subject.optimizer, key=init_key)
    every = num_steps // num_snapshots
    snaps, losses = [], []
    for i in range(num_snapshots):
        loss, grads = _inputs(task, state, train_key)
        snaps.append((int(state.step), state.params, state.opt_state, grads, loss))
        state, chunk = _advance(task, subject.optimizer, state, train_key, every)
        losses.append(np.asarray(chunk))
    rest = num_steps - every * num_snapshots
    if rest:
        state, chunk = _advance(task, subject.optimizer, state, train_key, rest)
        losses.append(np.asarray(chunk))
    stack = lambda *xs: jax.tree.map(lambda *ys: jnp.stack(ys), *xs)
    return Trace(subject=subject, task=task, train_key=train_key, steps=np.array([s[0] for s in snaps]),
                 params=stack(*[s[1] for s in snaps]), opt_state=stack(*[s[2] for s in snaps]),
                 grads=stack(*[s[3] for s in snaps]), loss=np.array([float(s[4]) for s in snaps]),
                 train_loss=np.concatenate(losses))
