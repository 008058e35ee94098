"""Learning-rate schedules of TaskSet's NAdamW and Adam8p, as optax-style schedules.

Each factory returns ``schedule(step) -> learning rate`` where ``step`` is the number of updates
already applied (0 for the first update). Every argument may be a traced array, so schedules of
many hyperparameter settings run in one ``jax.vmap``; the formulas use ``jnp.where`` (never a
Python ``if``) and stay finite at the edges (no warmup, no decay).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from lopt.optimizers.validation import FRACTION, NON_NEGATIVE, POSITIVE, check_number

__all__ = ["linear_exponential_schedule", "warmup_cosine_schedule"]


def warmup_cosine_schedule(
    learning_rate: ArrayLike,
    total_steps: ArrayLike,
    warmup_fraction: ArrayLike = 0.0,
    constant_fraction: ArrayLike = 1.0,
    min_learning_rate_mult: ArrayLike = 0.0,
) -> optax.Schedule:
    """Linear warmup, then constant, then cosine decay: TaskSet's NAdamW schedule.

    Follows ``get_cosine_learning_rate_fn`` of TaskSet (google-research
    ``task_set/optimizers/nadamw.py``; arXiv 2002.11887). With ``T = total_steps``,
    ``s = min(step, T)``, ``C = constant_fraction * T`` and
    ``W = min(warmup_fraction, constant_fraction) * T``:

    - ``s < W`` (warmup): ``lr = learning_rate * s / W`` (so the first update has lr 0);
    - otherwise: ``lr = lo + (learning_rate - lo) * (1 + cos(pi * max(s - C, 0) / (T - C))) / 2``
      with ``lo = min_learning_rate_mult * learning_rate``: held at ``learning_rate`` until
      ``C``, then a half cosine down to ``lo`` at ``T`` (and held there after ``T``).

    ``constant_fraction=1`` means no decay; ``warmup_fraction=0`` means no warmup. (The later
    JAX port in learned_optimization takes ``max`` instead of ``min`` of the two fractions for
    ``W``; we follow TaskSet, where the warmup cannot outlast the constant phase.)

    Args:
        learning_rate: peak learning rate, reached after the warmup.
        total_steps: number of updates the schedule spans, > 0.
        warmup_fraction: fraction of ``total_steps`` spent warming up, in [0, 1].
        constant_fraction: fraction of ``total_steps`` before the decay starts (warmup
            included), in [0, 1].
        min_learning_rate_mult: final learning rate as a fraction of ``learning_rate``, in
            [0, 1].

    Returns:
        A schedule ``step -> learning rate`` (a float32 scalar).

    Raises:
        TypeError, ValueError: for an argument of the wrong type or range.

    Example:
        >>> sched = warmup_cosine_schedule(1.0, total_steps=100, warmup_fraction=0.1,
        ...                                constant_fraction=0.5)
        >>> [round(float(sched(s)), 3) for s in (0, 5, 10, 50, 75, 100)]
        [0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
    """
    name = "warmup_cosine_schedule"
    check_number(name, "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number(name, "total_steps", total_steps, POSITIVE, example=10000)
    check_number(name, "warmup_fraction", warmup_fraction, FRACTION, example=0.05)
    check_number(name, "constant_fraction", constant_fraction, FRACTION, example=0.5)
    check_number(name, "min_learning_rate_mult", min_learning_rate_mult, FRACTION, example=0.0)

    def schedule(step: ArrayLike) -> jnp.ndarray:
        total = jnp.asarray(total_steps, jnp.float32)
        s = jnp.minimum(jnp.asarray(step, jnp.float32), total)
        constant_steps = total * constant_fraction
        warmup_steps = total * jnp.minimum(warmup_fraction, constant_fraction)
        decay_steps = total - constant_steps
        safe_decay_steps = jnp.where(decay_steps > 0, decay_steps, 1.0)
        progress = jnp.maximum(s - constant_steps, 0.0) / safe_decay_steps
        low = min_learning_rate_mult * learning_rate
        decayed = low + (learning_rate - low) * 0.5 * (1.0 + jnp.cos(np.pi * progress))
        warmup = learning_rate * s / jnp.where(warmup_steps > 0, warmup_steps, 1.0)
        return jnp.where(s < warmup_steps, warmup, decayed)

    return schedule


def linear_exponential_schedule(
    learning_rate: ArrayLike, linear_decay: ArrayLike = 0.0, exponential_decay: ArrayLike = 0.0
) -> optax.Schedule:
    """Linear times exponential decay: TaskSet's Adam8p schedule.

    ``lr = learning_rate * max(1 - linear_decay * step, 0) * exp(-exponential_decay * step)``,
    as in ``Adam8POptimizer.apply_gradients`` (google-research
    ``task_set/optimizers/adam8p.py``) with its default ``training_steps=10000``, where the
    step is not rescaled.

    Args:
        learning_rate: learning rate at step 0.
        linear_decay: fraction of ``learning_rate`` removed per step (clipped at 0), >= 0.
        exponential_decay: rate of the exponential decay per step, >= 0.

    Returns:
        A schedule ``step -> learning rate`` (a float32 scalar).

    Raises:
        TypeError, ValueError: for an argument of the wrong type or range.

    Example:
        >>> sched = linear_exponential_schedule(1.0, linear_decay=0.1)
        >>> [round(float(sched(s)), 3) for s in (0, 5, 10, 20)]
        [1.0, 0.5, 0.0, 0.0]
    """
    name = "linear_exponential_schedule"
    check_number(name, "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number(name, "linear_decay", linear_decay, NON_NEGATIVE, example=1e-5)
    check_number(name, "exponential_decay", exponential_decay, NON_NEGATIVE, example=1e-5)

    def schedule(step: ArrayLike) -> jnp.ndarray:
        s = jnp.asarray(step, jnp.float32)
        linear = jnp.maximum(1.0 - linear_decay * s, 0.0)
        return learning_rate * linear * jnp.exp(-exponential_decay * s)

    return schedule
