"""The estimator protocol, shared pieces (perturbations, guards, metrics) and averaging."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from lopt.meta.trainable import zero_frozen
from lopt.meta.unroll import UnrollOutput

__all__ = ["Averaged", "Estimator", "antithetic_thetas", "es_gradient", "finite_or_zero", "unroll_metrics"]


class Estimator(Protocol):
    """Turns unrolls into a gradient estimate for theta.

    ``init(theta, *, key) -> state`` and ``estimate(theta, state, *, key) -> (grad, state,
    metrics)``; both are pure and jit-able (estimators are pytrees: their task data travels as
    arguments, their settings are static).
    """

    def init(self, theta: Any, *, key: jax.Array) -> Any: ...

    def estimate(self, theta: Any, state: Any, *, key: jax.Array) -> tuple[Any, Any, dict]: ...


def finite_or_zero(grad: Any) -> tuple[Any, jax.Array]:
    """Returns ``(grad, False)`` if every leaf is finite, else ``(zeros, True)``: theta never sees NaN."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(grad)]
    finite = jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
    return jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grad), ~finite


def sample_perturbation(theta: Any, key: jax.Array, num: int, std: float, trainable: str = "") -> Any:
    """``num`` Gaussian perturbations of theta with standard deviation ``std`` (leading axis ``num``).

    ``trainable``: a pattern over theta's leaf names (:mod:`lopt.meta.trainable`); the leaves it
    does not match get no perturbation (zeros), so they get no gradient either. ``""``: every leaf.
    """
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    noise = [std * jax.random.normal(k, (num, *jnp.shape(x)), jnp.float32) for k, x in zip(keys, leaves)]
    return zero_frozen(jax.tree.unflatten(treedef, noise), trainable)


def antithetic_thetas(theta: Any, eps: Any) -> Any:
    """``[N, 2, ...]`` thetas: member 0 is ``theta + eps``, member 1 is ``theta - eps``."""
    return jax.tree.map(lambda t, e: jnp.stack([t + e, t - e], axis=1), theta, eps)


def es_gradient(differences: jax.Array, directions: Any, std: float) -> Any:
    """Antithetic ES estimate ``mean_i d_i * v_i / (2 std^2)`` for differences ``d`` and directions ``v``."""
    scale = differences / (2.0 * std**2 * differences.shape[0])
    return jax.tree.map(lambda v: jnp.tensordot(scale, v, axes=1), directions)


def unroll_metrics(out: UnrollOutput, resets: jax.Array, nonfinite_grad: jax.Array, grad: Any) -> dict:
    """The metrics every truncated estimator reports."""
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grad)))
    return {
        "meta_loss": out.meta_loss.mean(),
        "train_loss": jnp.nanmean(out.train_loss),
        "diverged": out.diverged.any(axis=1).sum(),
        "resets": resets.sum(),
        "nonfinite_grad": nonfinite_grad.astype(jnp.int32),
        "grad_norm": norm,
    }


@dataclasses.dataclass(frozen=True)
class Averaged:
    """Averages several estimators' gradients with weights; metrics are prefixed ``e<i>/``.

    Example:
        >>> # Averaged((PES(problem, num_tasks=8), TruncatedBackprop(problem, num_tasks=8)), (0.5, 0.5))
    """

    estimators: tuple
    weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.estimators:
            raise ValueError("Averaged: pass at least one estimator.")
        if self.weights is not None and len(self.weights) != len(self.estimators):
            raise ValueError(f"Averaged: {len(self.weights)} weights for {len(self.estimators)} estimators.")

    def _weights(self):
        weights = self.weights or (1.0,) * len(self.estimators)
        total = float(sum(weights))
        return [w / total for w in weights]

    def init(self, theta, *, key):
        keys = jax.random.split(key, len(self.estimators))
        return tuple(e.init(theta, key=k) for e, k in zip(self.estimators, keys))

    def estimate(self, theta, state, *, key):
        keys = jax.random.split(key, len(self.estimators))
        grads, states, metrics = [], [], {}
        for i, (estimator, s, k) in enumerate(zip(self.estimators, state, keys)):
            g, s, m = estimator.estimate(theta, s, key=k)
            grads.append(g)
            states.append(s)
            metrics.update({f"e{i}/{name}": value for name, value in m.items()})
        weights = self._weights()
        grad = jax.tree.map(lambda *gs: sum(w * g for w, g in zip(weights, gs)), *grads)
        metrics["meta_loss"] = sum(w * metrics[f"e{i}/meta_loss"] for i, w in enumerate(weights))
        return grad, tuple(states), metrics


jax.tree_util.register_dataclass(Averaged, data_fields=["estimators"], meta_fields=["weights"])
