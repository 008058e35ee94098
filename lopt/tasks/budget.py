"""Task costs and budgeted sampling: draw configs whose training step fits a budget.

The cost of a task is estimated three ways, from cheapest to dearest:

* ``num_params`` -- counted from shapes with ``jax.eval_shape`` (nothing runs);
* ``flops`` -- one training step (draw a batch, loss and gradient) counted from its jaxpr by
  :func:`lopt.flops.count_flops`: traced, not lowered or compiled. A recurrent task's scan over
  its sequence counts once per timestep (XLA's cost analysis, used before, counts a loop body
  once, which let recurrent configs pass a budget at 2-6x their cost);
* ``step_seconds`` -- measured: the step is compiled and run as a ``lax.scan`` of a few plain
  SGD steps on this machine (so per-call dispatch does not count).

Costs depend only on a task's structure, so they are cached per :func:`task_signature`
(per process): sampling many configs of few structures measures each structure once.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from lopt.flops import count_flops
from lopt.tasks.base import Task
from lopt.tasks.config import TaskConfig
from lopt.tasks.family import TaskFamily, build, get
from lopt.tasks.sampling import numpy_rng

__all__ = ["Budget", "BudgetError", "TaskCost", "estimate_cost", "sample_within_budget", "task_signature"]


@dataclasses.dataclass(frozen=True)
class TaskCost:
    """What one training step of a task costs.

    Attributes:
        num_params: scalar parameters.
        flops: FLOPs of one step (batch, loss, gradient; :func:`lopt.flops.count_flops`); ``None`` if not
            computed.
        step_seconds: measured seconds per step on this machine; ``None`` if not measured.
    """

    num_params: int
    flops: float | None = None
    step_seconds: float | None = None


class BudgetError(ValueError):
    """No config within the budget was found in the allowed number of tries."""


def task_signature(task: Task) -> Hashable:
    """A hashable key of everything about ``task`` that decides what compiles.

    Two built tasks with equal signatures have the same class, spec, settings shapes and
    dtypes, and data layout: a jitted function traced for one serves the other, and (when they
    hold the same dataset arrays) :func:`lopt.tasks.stack` accepts them.

    Example:
        >>> import lopt
        >>> a = lopt.tasks.build({"family": "quadratic", "dim": 3, "seed": 0})
        >>> b = lopt.tasks.build({"family": "quadratic", "dim": 3, "seed": 1, "noise": 0.5})
        >>> task_signature(a) == task_signature(b)
        True
    """
    settings = tuple(sorted((k, tuple(jnp.shape(v)), str(jnp.result_type(v))) for k, v in task.settings.items()))
    data_leaves, data_tree = jax.tree.flatten(task.data)
    data = (data_tree, tuple((tuple(x.shape), str(x.dtype)) for x in data_leaves))
    return (type(task), task.spec, settings, data)


def _train_step(task: Task, params: Any, key: jax.Array) -> tuple[jax.Array, Any]:
    return jax.value_and_grad(task.loss)(params, task.sample_batch(key, "train"))


def _sgd_steps(task: Task, params: Any, key: jax.Array, num_steps: int) -> jax.Array:
    def body(params, step_key):
        loss, grads = _train_step(task, params, step_key)
        return jax.tree.map(lambda p, g: p - 1e-6 * g.astype(p.dtype), params, grads), loss

    return jax.lax.scan(body, params, jax.random.split(key, num_steps))[1]


_COSTS: dict[Hashable, TaskCost] = {}


def _flops(task: Task, params_shape: Any) -> float:
    return count_flops(_train_step, task, params_shape, jax.random.key(0)).flops


def _seconds(task: Task, *, steps: int, repeats: int) -> float:
    run = jax.jit(_sgd_steps, static_argnums=3)
    params = jax.jit(task.init)(jax.random.key(0))
    jax.block_until_ready(run(task, params, jax.random.key(1), steps))  # compile
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(task, params, jax.random.key(2 + i), steps))
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def estimate_cost(task: Task | Mapping[str, Any], *, flops: bool = True, timing: bool = False, steps: int = 10,
                  repeats: int = 3) -> TaskCost:
    """Estimates the cost of one training step of a task or config (cached per structure).

    Args:
        task: a built task or a config naming its family.
        flops: also count FLOPs (traces one step; no lowering or compilation).
        timing: also measure seconds per step (compiles and runs ``repeats`` scans of ``steps``
            SGD steps; the median is reported).
        steps, repeats: timing sizes.

    Returns:
        A :class:`TaskCost`; fields not asked for are ``None`` unless cached from earlier calls.

    Example:
        >>> cost = estimate_cost({"family": "quadratic", "dim": 8})
        >>> cost.num_params, cost.flops > 0, cost.step_seconds
        (8, True, None)
    """
    if isinstance(task, Mapping):
        task = build(task)
    if not isinstance(task, Task):
        raise TypeError(f"estimate_cost: expected a Task or a task config, got {type(task).__name__}.")
    signature = task_signature(task)
    cost = _COSTS.get(signature)
    shapes = None
    if cost is None:
        shapes = jax.eval_shape(task.init, jax.random.key(0))
        cost = TaskCost(num_params=int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))))
    if flops and cost.flops is None:
        shapes = jax.eval_shape(task.init, jax.random.key(0)) if shapes is None else shapes
        cost = dataclasses.replace(cost, flops=_flops(task, shapes))
    if timing and cost.step_seconds is None:
        cost = dataclasses.replace(cost, step_seconds=_seconds(task, steps=steps, repeats=repeats))
    _COSTS[signature] = cost
    return cost


@dataclasses.dataclass(frozen=True)
class Budget:
    """Upper bounds on a task's cost per training step (``None``: no bound).

    Attributes:
        max_params: at most this many parameters.
        max_flops: at most this many FLOPs per step (:func:`lopt.flops.count_flops`).
        max_seconds: at most this many measured seconds per step on this machine.

    Example:
        >>> budget = Budget(max_params=1000)
        >>> budget.admits(TaskCost(num_params=10)), budget.admits(TaskCost(num_params=10**6))
        (True, False)
    """

    max_params: int | None = None
    max_flops: float | None = None
    max_seconds: float | None = None

    def __post_init__(self):
        for name in ("max_params", "max_flops", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"Budget: {name}={value!r} must be a positive number or None.")

    def cost(self, cfg: Task | Mapping[str, Any]) -> TaskCost:
        """The cost of ``cfg``, estimated as far as this budget needs."""
        return estimate_cost(cfg, flops=self.max_flops is not None, timing=self.max_seconds is not None)

    def admits(self, cost: TaskCost) -> bool:
        """Whether ``cost`` is within every bound (an unknown FLOP count passes a FLOP bound)."""
        if self.max_params is not None and cost.num_params > self.max_params:
            return False
        if self.max_flops is not None and cost.flops is not None and cost.flops > self.max_flops:
            return False
        too_slow = self.max_seconds is not None and cost.step_seconds is not None and cost.step_seconds > self.max_seconds
        return not too_slow


def _sampling_function(sampler: Any) -> Callable[[int], Mapping[str, Any]]:
    if isinstance(sampler, str):
        return get(sampler).sample
    if hasattr(sampler, "sample") and callable(sampler.sample):
        return sampler.sample
    if callable(sampler):
        return sampler
    raise TypeError(f"sample_within_budget: sampler={sampler!r} must be a family name, a TaskFamily, an object "
                    "with .sample(key) (e.g. a mixture) or a function key -> config.")


def sample_within_budget(sampler: str | TaskFamily | Any, key: Any, budget: Budget, *, max_tries: int = 100) -> TaskConfig:
    """Draws configs from ``sampler`` until one fits ``budget`` (rejection sampling).

    Try ``i`` samples with an int seed drawn from ``key``, so the result is deterministic per
    key. Costs are cached per structure, so repeated tries of one structure are cheap.

    Args:
        sampler: a family name, a :class:`~lopt.tasks.TaskFamily`, an object with
            ``.sample(key)`` (a mixture) or a function ``key -> config``.
        key: int seed or JAX key.
        budget: the bounds.
        max_tries: configs drawn before giving up.

    Raises:
        BudgetError: no config fitted within ``max_tries``; the message gives the cheapest
            cost seen, so the budget (or the sampler) can be adjusted.

    Example:
        >>> cfg = sample_within_budget("quadratic", 0, Budget(max_params=50))
        >>> cfg["dim"] <= 50
        True
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"sample_within_budget: budget must be a Budget, got {type(budget).__name__}.")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"sample_within_budget: max_tries={max_tries!r} must be a positive integer.")
    sample = _sampling_function(sampler)
    rng = numpy_rng(key)
    cheapest = None
    for _ in range(max_tries):
        cfg = TaskConfig(sample(int(rng.integers(2**31))))
        cost = budget.cost(cfg)
        if budget.admits(cost):
            return cfg
        if cheapest is None or cost.num_params < cheapest.num_params:
            cheapest = cost
    raise BudgetError(f"sample_within_budget: none of {max_tries} configs fitted {budget}; the smallest had "
                      f"{cheapest}. Raise the budget, raise max_tries, or sample from a cheaper distribution.")
