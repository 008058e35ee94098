"""Truncated estimators over persistent slots: TBPTT, truncated antithetic ES, and PES."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lopt.meta.estimators.base import (
    antithetic_thetas,
    es_gradient,
    finite_or_zero,
    sample_perturbation,
    unroll_metrics,
)
from lopt.meta.unroll import MetaProblem, SlotState, init_slots, reset_finished, unroll

__all__ = ["PES", "PESState", "TruncatedBackprop", "TruncatedES"]


def _check(name: str, num_tasks: int, std: float | None = None) -> None:
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"{name}: num_tasks={num_tasks!r} must be a positive integer.")
    if std is not None and not std > 0:
        raise ValueError(f"{name}: std={std!r} must be > 0 (a typical value is 0.01).")


def _broadcast_members(theta: Any, num_tasks: int, num_members: int) -> Any:
    return jax.tree.map(lambda t: jnp.broadcast_to(t, (num_tasks, num_members, *jnp.shape(t))), theta)


@dataclasses.dataclass(frozen=True)
class TruncatedBackprop:
    """Truncated backprop through time: the exact gradient of each unroll's mean meta-loss.

    Biased (it ignores the effect of theta on the state an unroll starts from, and suffers from
    the short-horizon bias) but cheap and low-variance.

    Attributes:
        problem: the :class:`~lopt.meta.MetaProblem`.
        num_tasks: parallel inner trainings.
    """

    problem: MetaProblem
    num_tasks: int = 8

    def __post_init__(self):
        _check("TruncatedBackprop", self.num_tasks)

    def init(self, theta, *, key) -> SlotState:
        return init_slots(self.problem, theta, key=key, num_tasks=self.num_tasks, num_members=1)

    def estimate(self, theta, state: SlotState, *, key):
        state, resets = reset_finished(self.problem, theta, state, key=key)

        def meta_loss(theta):
            thetas = _broadcast_members(theta, self.num_tasks, 1)
            new_state, out = unroll(self.problem, thetas, state)
            return out.meta_loss.mean(), (new_state, out)

        (_, (state, out)), grad = jax.value_and_grad(meta_loss, has_aux=True)(theta)
        grad, nonfinite = finite_or_zero(grad)
        return grad, jax.lax.stop_gradient(state), unroll_metrics(out, resets, nonfinite, grad)


@dataclasses.dataclass(frozen=True)
class _AntitheticEstimator:
    """Fields and checks shared by the antithetic (ES-family) truncated estimators."""

    problem: MetaProblem
    num_tasks: int = 8
    std: float = 0.01
    trainable: str = ""

    def __post_init__(self):
        _check(type(self).__name__, self.num_tasks, self.std)


@dataclasses.dataclass(frozen=True)
class TruncatedES(_AntitheticEstimator):
    """Truncated antithetic evolution strategies.

    Both members of a pair start each unroll from the slot's shared state with ``theta + eps``
    and ``theta - eps``; the estimate is ``mean (L+ - L-) eps / (2 std^2)``. The slot continues
    from the ``+`` member's state. Biased over long horizons (it only sees each truncation's
    effect), which PES corrects.

    Attributes:
        problem: the meta-problem.
        num_tasks: antithetic pairs (each is two inner trainings).
        std: perturbation standard deviation.
        trainable: perturb only theta's leaves whose names match this pattern
            (:mod:`lopt.meta.trainable`; ``""``: all).
    """

    def init(self, theta, *, key) -> SlotState:
        return init_slots(self.problem, theta, key=key, num_tasks=self.num_tasks, num_members=1)

    def estimate(self, theta, state: SlotState, *, key):
        reset_key, noise_key = jax.random.split(key)
        state, resets = reset_finished(self.problem, theta, state, key=reset_key)
        eps = sample_perturbation(theta, noise_key, self.num_tasks, self.std, self.trainable)
        pair = dataclasses.replace(
            state, params=jax.tree.map(lambda x: jnp.repeat(x, 2, axis=1), state.params),
            opt_state=jax.tree.map(lambda x: jnp.repeat(x, 2, axis=1), state.opt_state))
        pair, out = unroll(self.problem, antithetic_thetas(theta, eps), pair, freeze_diverged_state=False)
        grad, nonfinite = finite_or_zero(es_gradient(out.meta_loss[:, 0] - out.meta_loss[:, 1], eps, self.std))
        state = dataclasses.replace(pair, params=jax.tree.map(lambda x: x[:, :1], pair.params),
                                    opt_state=jax.tree.map(lambda x: x[:, :1], pair.opt_state))
        return grad, state, unroll_metrics(out, resets, nonfinite, grad)



@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PESState:
    """PES state: the slots (antithetic pairs) and each pair's accumulated perturbation."""

    slots: SlotState
    accumulator: Any


@dataclasses.dataclass(frozen=True)
class PES(_AntitheticEstimator):
    """Persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021).

    Each antithetic pair keeps its own ``+`` and ``-`` trajectories across unrolls, and the sum
    ``xi`` of the perturbations used since its episode began (reset to zero when the episode
    ends). The estimate ``mean (L+ - L-) xi / (2 std^2)`` is unbiased for the gradient of the
    whole-episode (smoothed) meta-loss, unlike truncated ES. Both members see the same data.

    Attributes:
        problem: the meta-problem.
        num_tasks: antithetic pairs.
        std: perturbation standard deviation.
        trainable: perturb only theta's leaves whose names match this pattern
            (:mod:`lopt.meta.trainable`; ``""``: all).
    """

    def init(self, theta, *, key) -> PESState:
        slots = init_slots(self.problem, theta, key=key, num_tasks=self.num_tasks, num_members=2)
        zeros = jax.tree.map(lambda t: jnp.zeros((self.num_tasks, *jnp.shape(t)), jnp.float32), theta)
        return PESState(slots=slots, accumulator=zeros)

    def estimate(self, theta, state: PESState, *, key):
        reset_key, noise_key = jax.random.split(key)
        slots, resets = reset_finished(self.problem, theta, state.slots, key=reset_key)
        eps = sample_perturbation(theta, noise_key, self.num_tasks, self.std, self.trainable)

        def accumulate(xi, e):
            mask = resets.reshape(resets.shape + (1,) * (xi.ndim - 1))
            return jnp.where(mask, 0.0, xi) + e

        accumulator = jax.tree.map(accumulate, state.accumulator, eps)
        slots, out = unroll(self.problem, antithetic_thetas(theta, eps), slots, freeze_diverged_state=False)
        differences = out.meta_loss[:, 0] - out.meta_loss[:, 1]
        grad, nonfinite = finite_or_zero(es_gradient(differences, accumulator, self.std))
        return grad, PESState(slots=slots, accumulator=accumulator), unroll_metrics(out, resets, nonfinite, grad)


for _cls in (TruncatedBackprop, TruncatedES, PES):
    jax.tree_util.register_dataclass(_cls, data_fields=["problem"],
                                     meta_fields=[f.name for f in dataclasses.fields(_cls) if f.name != "problem"])
del _cls
