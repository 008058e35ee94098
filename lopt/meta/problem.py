"""Building a :class:`MetaProblem` from task configs, normalisers and a truncation schedule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from lopt.learned.base import LearnedOptimizer
from lopt.meta.truncation import ConstantHorizon, TruncationSchedule
from lopt.meta.unroll import MetaProblem
from lopt.tasks import build, stack

__all__ = ["make_problem"]


def make_problem(lopt: LearnedOptimizer, task_configs: Sequence[Mapping[str, Any]], *,
                 horizon: int | None = None, truncation: TruncationSchedule | None = None,
                 unroll_length: int = 50, objective: str = "train",
                 normalizers: Sequence[Any] | None = None) -> MetaProblem:
    """Builds the meta-problem for a learned optimizer over a pool of task configs of one structure.

    Args:
        lopt: the learned optimizer.
        task_configs: configs that build tasks of one structure (they are stacked).
        horizon: shorthand for ``truncation=ConstantHorizon(horizon)``.
        truncation: a truncation schedule (default: constant 1,000 steps).
        unroll_length: inner steps per truncated unroll.
        objective: ``"train"`` or ``"valid"`` meta-objective.
        normalizers: per config, a ``(initial_loss, best_loss)`` pair or an object with
            ``initial_loss`` and ``best_loss`` attributes. ``None`` gives every task the
            identity-like normaliser ``(1, 0)`` (raw losses), which is only sensible for a
            single task family of known scale; use :class:`lopt.meta.NormalizerCache` otherwise.

    Example:
        >>> import lopt
        >>> problem = make_problem(lopt.learned.get("learnable_sgdm"), [{"family": "quadratic"}], horizon=100,
        ...                        unroll_length=10)
        >>> problem.pool_size
        1
    """
    if not task_configs:
        raise ValueError("make_problem: task_configs is empty; pass at least one task config.")
    if horizon is not None and truncation is not None:
        raise ValueError("make_problem: pass horizon or truncation, not both.")
    truncation = truncation or ConstantHorizon(horizon or 1000)
    tasks = stack([build(cfg) for cfg in task_configs])
    if normalizers is None:
        pairs = [(1.0, 0.0)] * len(task_configs)
    else:
        if len(normalizers) != len(task_configs):
            raise ValueError(f"make_problem: {len(normalizers)} normalizers for {len(task_configs)} task configs.")
        pairs = [(n.initial_loss, n.best_loss) if hasattr(n, "initial_loss") else tuple(n) for n in normalizers]
    initial, best = (jnp.asarray(v, jnp.float32) for v in zip(*pairs))
    return MetaProblem(lopt=lopt, tasks=tasks, initial_loss=initial, best_loss=best, truncation=truncation,
                       unroll_length=unroll_length, objective=objective)
