"""Stacking tasks of one structure so a single program vmaps over them."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.host_transfer import to_device
from lopt.tasks.base import Task

__all__ = ["stack", "vmap_axes"]


def stack(tasks: Sequence[Task]) -> Task:
    """Stacks tasks that share a spec and dataset into one task with batched settings.

    The result's ``settings`` have a leading axis of ``len(tasks)``; its ``data`` is shared
    (not copied). Map over it with ``jax.vmap(fn, in_axes=(vmap_axes(stacked), ...))``.

    Raises:
        ValueError: if the tasks differ in type, spec, settings keys or dataset.

    Example:
        >>> import jax, lopt
        >>> family = lopt.tasks.get("quadratic")
        >>> tasks = [family.build({"dim": 5, "seed": s}) for s in range(3)]
        >>> stacked = lopt.tasks.stack(tasks)
        >>> init = jax.vmap(lambda t, k: t.init(k), in_axes=(lopt.tasks.vmap_axes(stacked), 0))
        >>> init(stacked, jax.random.split(jax.random.key(0), 3))["x"].shape
        (3, 5)
    """
    if not tasks:
        raise ValueError("stack: got no tasks; pass a non-empty list.")
    first = tasks[0]
    for i, task in enumerate(tasks[1:], start=1):
        if type(task) is not type(first) or task.spec != first.spec:
            raise ValueError(f"stack: task {i} has structure {task.spec} but task 0 has {first.spec}; "
                             "only tasks of one structure can share a program.")
        if set(task.settings) != set(first.settings):
            raise ValueError(f"stack: task {i} has settings {sorted(task.settings)}, task 0 {sorted(first.settings)}.")
        same_data = jax.tree.structure(task.data) == jax.tree.structure(first.data) and all(
            a is b for a, b in zip(jax.tree.leaves(task.data), jax.tree.leaves(first.data)))
        if not same_data:
            raise ValueError(f"stack: task {i} uses a different dataset than task 0; stack tasks of one dataset.")
    settings = {k: _stack_values([t.settings[k] for t in tasks]) for k in first.settings}
    return type(first)(first.spec, first.data, settings)


def _stack_values(values: list) -> jax.Array:
    """One setting of every task, stacked on the host and put on the device in one transfer.

    ``jnp.stack`` would compile a concatenation for every distinct shape and count, and even
    ``jnp.asarray`` of the host stack compiles an identity program per shape (about 120 small
    programs for the campaign's 9 structures, seconds of set-up on a GPU); settings are small, so
    the host copy costs nothing. PRNG keys, which numpy cannot hold, and weakly typed values
    (Python scalars: their stack must stay weak, so ``bfloat16 * setting`` stays bfloat16) stack
    in JAX.
    """
    if any(_needs_jax(v) for v in values):
        return jnp.stack([jnp.asarray(v) for v in values])
    return to_device(np.stack([np.asarray(v) for v in values]))


def _needs_jax(value: object) -> bool:
    """Whether a setting must be stacked in JAX: a PRNG key or a weakly typed value."""
    if isinstance(value, (bool, int, float, complex)):
        return True
    return isinstance(value, jax.Array) and (jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
                                             or value.weak_type)


def vmap_axes(task: Task) -> Task:
    """The ``in_axes`` for a stacked task: data broadcast (``None``), settings mapped (``0``)."""
    return type(task)(task.spec, None, jax.tree.map(lambda _: 0, task.settings))
