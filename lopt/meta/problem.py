"""Building a :class:`MetaProblem` from task configs, normalisers and a truncation schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lopt.host_transfer import to_device
from lopt.learned.base import LearnedOptimizer
from lopt.meta.truncation import ConstantHorizon, TruncationSchedule
from lopt.meta.unroll import MetaProblem
from lopt.tasks import Task, build, stack

__all__ = ["make_problem", "with_normalizers"]


def make_problem(lopt: LearnedOptimizer, task_configs: Sequence[Mapping[str, Any]], *,
                 horizon: int | None = None, truncation: TruncationSchedule | None = None,
                 unroll_length: int = 50, objective: str = "train",
                 normalizers: Sequence[Any] | None = None, episode_weighting: str = "uniform") -> MetaProblem:
    """Builds the meta-problem for a learned optimizer over a pool of task configs of one structure.

    Args:
        lopt: the learned optimizer.
        task_configs: configs that build tasks of one structure, or tasks already built from
            them (they are stacked).
        horizon: shorthand for ``truncation=ConstantHorizon(horizon)``.
        truncation: a truncation schedule (default: constant 1,000 steps).
        unroll_length: inner steps per truncated unroll.
        objective: ``"train"`` or ``"valid"`` meta-objective.
        normalizers: per config, a ``(initial_loss, best_loss)`` pair or an object with
            ``initial_loss`` and ``best_loss`` attributes. ``None`` gives every task the
            identity-like normaliser ``(1, 0)`` (raw losses), which is only sensible for a
            single task family of known scale; use :class:`lopt.meta.NormalizerCache` otherwise.
        episode_weighting: ``"uniform"`` or ``"linear"`` weights of an episode's inner steps
            in the meta-loss (see :class:`lopt.meta.MetaProblem`).

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
    tasks = stack([cfg if isinstance(cfg, Task) else build(cfg) for cfg in task_configs])
    initial, best = _normalizer_arrays(normalizers, len(task_configs), "make_problem")
    return MetaProblem(lopt=lopt, tasks=tasks, initial_loss=initial, best_loss=best, truncation=truncation,
                       unroll_length=unroll_length, objective=objective, episode_weighting=episode_weighting)


def with_normalizers(problem: MetaProblem, normalizers: Sequence[Any]) -> MetaProblem:
    """``problem`` with other normalisers (one per config, as for :func:`make_problem`).

    Only the two normaliser arrays change, so a program compiled for ``problem`` runs the result.

    Example:
        >>> import lopt
        >>> problem = make_problem(lopt.learned.get("learnable_sgdm"), [{"family": "quadratic", "dim": 4}],
        ...                        horizon=20, unroll_length=5)
        >>> float(with_normalizers(problem, [(3.0, 1.0)]).best_loss[0])
        1.0
    """
    initial, best = _normalizer_arrays(normalizers, int(problem.initial_loss.shape[0]), "with_normalizers")
    return dataclasses.replace(problem, initial_loss=initial, best_loss=best)


def _normalizer_arrays(normalizers: Sequence[Any] | None, count: int, caller: str):
    """``(initial_loss, best_loss)`` float32 arrays; ``(1, 0)`` per config without normalisers."""
    if normalizers is None:
        pairs = [(1.0, 0.0)] * count
    else:
        if len(normalizers) != count:
            raise ValueError(f"{caller}: {len(normalizers)} normalizers for {count} task configs.")
        pairs = [(n.initial_loss, n.best_loss) if hasattr(n, "initial_loss") else tuple(n) for n in normalizers]
    initial, best = (to_device(v, np.float32) for v in zip(*pairs))
    return initial, best
