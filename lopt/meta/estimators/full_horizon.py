"""Full-horizon antithetic ES: every pair trains a fresh task for its whole horizon."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.meta.estimators.base import (
    antithetic_thetas,
    es_gradient,
    finite_or_zero,
    sample_perturbation,
)
from lopt.meta.normalizer import normalize_loss
from lopt.meta.unroll import LOSS_CLIP, MetaProblem, SlotState, _fresh_episode, unroll

__all__ = ["FullHorizonES"]

META_LOSSES = ("mean", "final")


@dataclasses.dataclass(frozen=True)
class FullHorizonES:
    """Antithetic ES on whole episodes (no truncation bias; one estimate per full training).

    Each outer step samples ``num_tasks`` fresh tasks and horizons, trains each with
    ``theta + eps`` and ``theta - eps`` from the same init and data for its whole horizon, and
    compares the two meta-losses. Episodes are scanned in chunks of ``K`` steps up to the
    schedule's ``max_horizon`` (chunks past a pair's own horizon are frozen and ignored), so
    use a constant or narrow schedule: the cost is set by the longest horizon.

    Attributes:
        problem: the meta-problem (its objective picks train or valid batches).
        num_tasks: antithetic pairs per estimate.
        std: perturbation standard deviation.
        meta_loss: ``"mean"`` (normalised loss averaged over the episode) or ``"final"``
            (normalised loss of the final params).
        final_batches: with ``"final"``, recompute the final loss on this many fresh batches
            (``0`` uses the mean over the last unroll of ``K`` steps instead).
        sign_only: use only the sign of ``L+ - L-`` (as VeLO did), robust to outlier tasks.
        trainable: perturb only theta's leaves whose names match this pattern
            (:mod:`lopt.meta.trainable`; ``""``: all).
    """

    problem: MetaProblem
    num_tasks: int = 8
    std: float = 0.01
    meta_loss: str = "mean"
    final_batches: int = 4
    sign_only: bool = False
    trainable: str = ""

    def __post_init__(self):
        if not isinstance(self.num_tasks, int) or self.num_tasks < 1:
            raise ValueError(f"FullHorizonES: num_tasks={self.num_tasks!r} must be a positive integer.")
        if not self.std > 0:
            raise ValueError(f"FullHorizonES: std={self.std!r} must be > 0.")
        if self.meta_loss not in META_LOSSES:
            raise ValueError(f"FullHorizonES: meta_loss={self.meta_loss!r}; use one of {META_LOSSES}.")
        if not isinstance(self.final_batches, int) or self.final_batches < 0:
            raise ValueError(f"FullHorizonES: final_batches={self.final_batches!r} must be an integer >= 0.")
        if self.problem.truncation.max_horizon > 100_000:
            raise ValueError("FullHorizonES needs finite horizons; use a constant or log-uniform truncation.")

    def init(self, theta, *, key):
        del theta, key
        return jnp.zeros((), jnp.int32)  # number of estimates made

    def _final_loss(self, slots: SlotState) -> jax.Array:
        """Normalised loss of each member's final params on fresh batches: ``[N, 2]``."""
        split = "valid" if self.problem.objective == "valid" else "train"

        def one(task_index, episode_key, params):
            task = self.problem.task(task_index)
            key = jax.random.fold_in(jax.random.wrap_key_data(episode_key), 2)
            keys = jax.random.split(key, self.final_batches)
            loss = jax.vmap(lambda k: task.loss(params, task.sample_batch(k, split)))(keys).mean()
            return normalize_loss(loss, self.problem.initial_loss[task_index],
                                  self.problem.best_loss[task_index], clip=LOSS_CLIP)

        per_member = jax.vmap(one, in_axes=(None, None, 0))
        return jax.vmap(per_member)(slots.task_index, slots.episode_key, slots.params)

    def estimate(self, theta, state, *, key):
        episode_key, noise_key = jax.random.split(key)
        fresh = jax.vmap(lambda k: _fresh_episode(self.problem, theta, k, 2))(
            jax.random.split(episode_key, self.num_tasks))
        task_index, horizon, ep_key, params, opt_state = fresh
        slots = SlotState(task_index=task_index, step=jnp.zeros((self.num_tasks,), jnp.int32), horizon=horizon,
                          episode_key=ep_key, params=params, opt_state=opt_state)
        eps = sample_perturbation(theta, noise_key, self.num_tasks, self.std, self.trainable)
        thetas = antithetic_thetas(theta, eps)
        k = self.problem.unroll_length
        num_chunks = -(-self.problem.truncation.max_horizon // k)

        def chunk(carry, index):
            slots, total, last, diverged = carry
            active = index * k < slots.horizon  # [N]
            new, out = unroll(self.problem, thetas, slots, freeze_diverged_state=False)
            mask = lambda a, b: jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)
            slots = jax.tree.map(mask, new, slots)
            value = jnp.where(diverged, LOSS_CLIP, out.meta_loss)  # a diverged member scores the clip
            total = total + jnp.where(active[:, None], value, 0.0)
            last = jnp.where(active[:, None], value, last)
            diverged = diverged | (out.diverged & active[:, None])
            return (slots, total, last, diverged), None

        zeros = jnp.zeros((self.num_tasks, 2))
        (slots, total, last, diverged), _ = jax.lax.scan(
            chunk, (slots, zeros, zeros, jnp.zeros((self.num_tasks, 2), bool)), jnp.arange(num_chunks))
        if self.meta_loss == "mean":
            losses = total / (slots.horizon // k)[:, None]
        elif self.final_batches > 0:
            losses = jnp.where(diverged, LOSS_CLIP, self._final_loss(slots))
        else:
            losses = last
        differences = losses[:, 0] - losses[:, 1]
        if self.sign_only:
            differences = jnp.sign(differences)
        grad, nonfinite = finite_or_zero(es_gradient(differences, eps, self.std))
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grad)))
        metrics = {"meta_loss": losses.mean(), "diverged": diverged.any(axis=1).sum(),
                   "resets": jnp.int32(self.num_tasks), "nonfinite_grad": nonfinite.astype(jnp.int32),
                   "grad_norm": norm, "train_loss": jnp.nan}
        return grad, state + 1, metrics


jax.tree_util.register_dataclass(
    FullHorizonES, data_fields=["problem"],
    meta_fields=["num_tasks", "std", "meta_loss", "final_batches", "sign_only", "trainable"])
