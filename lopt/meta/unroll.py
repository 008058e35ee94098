"""Vectorised truncated unrolls: many inner trainings advanced by K steps in one program.

A :class:`MetaProblem` says *what* is trained (a learned optimizer on a pool of tasks of one
structure, with their normalisers) and *how episodes are cut* (a truncation schedule and the
unroll length ``K``). A :class:`SlotState` holds ``N`` inner trainings ("slots"), each with
``M`` members (``M = 2`` for antithetic ES/PES pairs, ``1`` otherwise) that share their task,
initialisation and data but carry their own params and optimizer state.

Design choices:

* Horizons and the first episode's random offset are multiples of ``K``, so episodes end
  exactly at unroll boundaries. Resets (new task, fresh params) therefore happen once per
  unroll in :func:`reset_finished`, not inside the scan, where under ``vmap`` a reset would
  cost a fresh ``init`` on every inner step.
* The batch of inner step ``t`` of an episode is drawn with ``fold_in(episode_key, t)``: both
  members of a pair see the same data (PES needs it) and runs are reproducible.
* Divergence (a non-finite loss; non-finite params surface as one a step later) is detected
  per member inside the scan: the member is frozen, its remaining contributions are the normaliser's clip value (the worst possible
  score), it is counted, and its slot is marked finished so it resets at the next boundary.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.learned.base import LearnedOptimizer
from lopt.meta.normalizer import normalize_loss
from lopt.meta.truncation import TruncationSchedule
from lopt.tasks.base import Task

__all__ = ["MetaProblem", "SlotState", "UnrollOutput", "init_slots", "reset_finished", "unroll"]

LOSS_CLIP = 2.0
OBJECTIVES = ("train", "valid")
#: How the inner steps of an episode weigh in the meta-loss (see :class:`MetaProblem`).
EPISODE_WEIGHTINGS = ("uniform", "linear")


@dataclasses.dataclass(frozen=True)
class MetaProblem:
    """What meta-training trains on: a pytree (task data and normalisers are leaves).

    Attributes:
        lopt: the learned optimizer architecture (static).
        tasks: a stacked pool of tasks of one structure (see :func:`lopt.tasks.stack`);
            settings have a leading axis ``P``.
        initial_loss, best_loss: ``[P]`` normaliser values of each pool task.
        truncation: the horizon schedule (static).
        unroll_length: ``K``, inner steps per unroll (static).
        objective: ``"train"`` (meta-loss on training batches) or ``"valid"`` (on validation
            batches of the inner task: the "validation outer objective" of Metz et al.).
        episode_weighting: ``"uniform"`` (every inner step of an episode counts the same: the
            area under the normalised loss curve) or ``"linear"`` (step ``t`` of an episode of
            ``H`` steps weighs ``2 (t + 1) / (H + 1)``: the weights still average 1 over an
            episode, but its last steps count about twice and its first ones barely, moving the
            objective toward the final loss that evaluation scores).
        active: optional ``[P]`` boolean mask of the pool tasks that new episodes may draw
            (``None``: all). A mixture run re-draws the inactive half of a pool while running
            episodes finish on the other half, so no episode's task changes under it.
    """

    lopt: LearnedOptimizer
    tasks: Task
    initial_loss: jax.Array
    best_loss: jax.Array
    truncation: TruncationSchedule
    unroll_length: int
    objective: str = "train"
    active: jax.Array | None = None
    episode_weighting: str = "uniform"

    def __post_init__(self):
        if not isinstance(self.lopt, LearnedOptimizer):
            raise TypeError(f"MetaProblem: lopt must be a LearnedOptimizer (lopt.learned.get(name)), "
                            f"got {type(self.lopt).__name__}.")
        if not isinstance(self.unroll_length, int) or self.unroll_length < 1:
            raise ValueError(f"MetaProblem: unroll_length={self.unroll_length!r} must be a positive integer.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"MetaProblem: objective={self.objective!r}; use one of {OBJECTIVES}.")
        if self.episode_weighting not in EPISODE_WEIGHTINGS:
            raise ValueError(f"MetaProblem: episode_weighting={self.episode_weighting!r}; use one of "
                             f"{EPISODE_WEIGHTINGS}.")

    @property
    def pool_size(self) -> int:
        """``P``, the number of tasks in the pool."""
        return int(jnp.shape(self.initial_loss)[0])

    def task(self, index: jax.Array) -> Task:
        """Pool task ``index`` (may be traced) as an ordinary task."""
        settings = {k: v[index] for k, v in self.tasks.settings.items()}
        return type(self.tasks)(self.tasks.spec, self.tasks.data, settings)

    def round_horizon(self, horizon: jax.Array) -> jax.Array:
        """Rounds a horizon up to a multiple of the unroll length."""
        k = self.unroll_length
        return ((horizon + k - 1) // k) * k


jax.tree_util.register_dataclass(
    MetaProblem, data_fields=["tasks", "initial_loss", "best_loss", "active"],
    meta_fields=["lopt", "truncation", "unroll_length", "objective", "episode_weighting"])


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["task_index", "step", "horizon", "episode_key", "params", "opt_state"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SlotState:
    """``N`` inner trainings with ``M`` members each.

    Attributes:
        task_index: ``[N]`` pool index of each slot's task.
        step: ``[N]`` inner steps taken in the current episode.
        horizon: ``[N]`` length of the current episode (a multiple of ``K``).
        episode_key: ``[N, ...]`` raw PRNG key data of the episode (init and batches).
        params: ``[N, M, ...]`` inner params.
        opt_state: ``[N, M, ...]`` learned-optimizer state.
    """

    task_index: jax.Array
    step: jax.Array
    horizon: jax.Array
    episode_key: jax.Array
    params: Any
    opt_state: Any

    @property
    def num_members(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[1])


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["meta_loss", "diverged", "train_loss"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class UnrollOutput:
    """What one unroll reports, per slot and member (``[N, M]``).

    Attributes:
        meta_loss: mean normalised meta-objective over the unroll's ``K`` steps.
        diverged: whether the member diverged during this unroll.
        train_loss: mean raw training loss over the finite steps (NaN if none).
    """

    meta_loss: jax.Array
    diverged: jax.Array
    train_loss: jax.Array


def _fresh_episode(problem: MetaProblem, theta: Any, key: jax.Array, num_members: int):
    """A new episode for one slot: task index, horizon, key, params and state (members equal)."""
    index_key, horizon_key, episode_key = jax.random.split(key, 3)
    if problem.active is None:
        task_index = jax.random.randint(index_key, (), 0, problem.pool_size)
    else:
        task_index = jax.random.categorical(index_key, jnp.where(problem.active, 0.0, -jnp.inf))
    horizon = problem.round_horizon(problem.truncation.sample(horizon_key))
    task = problem.task(task_index)
    params = task.init(jax.random.fold_in(episode_key, 3))  # streams: 0 train, 1 valid, 2 final, 3 init
    opt_state = problem.lopt.optimizer(theta, num_steps=horizon).init(params)
    repeat = lambda x: jnp.broadcast_to(x, (num_members, *jnp.shape(x)))
    return (task_index, horizon, jax.random.key_data(episode_key),
            jax.tree.map(repeat, params), jax.tree.map(repeat, opt_state))


def init_slots(problem: MetaProblem, theta: Any, *, key: jax.Array, num_tasks: int,
               num_members: int = 1) -> SlotState:
    """Starts ``num_tasks`` slots at random offsets so they do not all reset together.

    Each slot's first episode is cut to a random multiple of ``K`` of its sampled horizon
    (later episodes run their full horizon).

    Example:
        >>> import jax, lopt
        >>> problem = lopt.meta.make_problem(lopt.learned.get("learnable_sgdm"),
        ...     [{"family": "quadratic", "dim": 4}], horizon=100, unroll_length=10)
        >>> theta = problem.lopt.init(jax.random.key(0))
        >>> state = init_slots(problem, theta, key=jax.random.key(1), num_tasks=8, num_members=2)
        >>> state.params["x"].shape
        (8, 2, 4)
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks={num_tasks!r} must be a positive integer.")
    if num_members not in (1, 2):
        raise ValueError(f"num_members={num_members!r} must be 1 or 2 (an antithetic pair).")
    episode_keys, offset_keys = jax.random.split(key, 2)

    def one(k, offset_key):
        task_index, horizon, ep_key, params, opt_state = _fresh_episode(problem, theta, k, num_members)
        units = horizon // problem.unroll_length
        first = problem.unroll_length * jax.random.randint(offset_key, (), 1, units + 1)
        return task_index, first, ep_key, params, opt_state

    task_index, horizon, ep_key, params, opt_state = jax.vmap(one)(
        jax.random.split(episode_keys, num_tasks), jax.random.split(offset_keys, num_tasks))
    return SlotState(task_index=task_index, step=jnp.zeros((num_tasks,), jnp.int32), horizon=horizon,
                     episode_key=ep_key, params=params, opt_state=opt_state)


def reset_finished(problem: MetaProblem, theta: Any, state: SlotState, *, key: jax.Array
                   ) -> tuple[SlotState, jax.Array]:
    """Replaces every finished slot (``step >= horizon``) by a fresh episode of a new task.

    Returns:
        The new state and the ``[N]`` boolean mask of slots that were reset.
    """
    num_tasks, num_members = state.step.shape[0], state.num_members
    fresh = jax.vmap(lambda k: _fresh_episode(problem, theta, k, num_members))(
        jax.random.split(key, num_tasks))
    done = state.step >= state.horizon

    def pick(new, old):
        mask = done.reshape(done.shape + (1,) * (jnp.ndim(old) - 1))
        return jnp.where(mask, new, old)

    task_index, horizon, ep_key, params, opt_state = fresh
    new_state = SlotState(
        task_index=pick(task_index, state.task_index), step=jnp.where(done, 0, state.step),
        horizon=pick(horizon, state.horizon), episode_key=pick(ep_key, state.episode_key),
        params=jax.tree.map(pick, params, state.params), opt_state=jax.tree.map(pick, opt_state, state.opt_state))
    return new_state, done


def _member_step(problem: MetaProblem, freeze_state: bool, theta, params, opt_state, diverged, task_index, step,
                 horizon, episode_key):
    """One inner step of one member of one slot (``freeze_state``: as :func:`unroll`'s)."""
    task = problem.task(task_index)
    key = jax.random.wrap_key_data(episode_key)
    batch = task.sample_batch(jax.random.fold_in(jax.random.fold_in(key, 0), step), "train")
    loss, grads = jax.value_and_grad(task.loss)(params, batch)
    needs_valid = problem.objective == "valid" or problem.lopt.reads_valid_loss
    valid_loss = None
    if needs_valid:
        valid_batch = task.sample_batch(jax.random.fold_in(jax.random.fold_in(key, 1), step), "valid")
        valid_loss = task.loss(params, valid_batch)
    opt = problem.lopt.optimizer(theta, num_steps=horizon)
    updates, new_opt_state = opt.update(grads, opt_state, params, loss=loss, valid_loss=valid_loss)
    new_params = optax.apply_updates(params, updates)
    # Divergence is read from the loss alone: non-finite params show up as a non-finite loss one
    # step later, and a scalar known before the update lets the select below fuse into the
    # update kernel instead of costing another pass over params and optimizer state.
    ok = jnp.isfinite(loss) & ~diverged
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    meta_value = valid_loss if problem.objective == "valid" else loss
    normalized = normalize_loss(meta_value, problem.initial_loss[task_index], problem.best_loss[task_index],
                                clip=LOSS_CLIP)
    contribution = jnp.where(ok, normalized, LOSS_CLIP)
    if problem.episode_weighting == "linear":
        contribution = contribution * (2.0 * (step + 1) / (horizon + 1)).astype(contribution.dtype)
    finite_loss = jnp.where(ok, loss, 0.0)
    if freeze_state:
        new_opt_state = keep(new_opt_state, opt_state)
    return keep(new_params, params), new_opt_state, ~ok, contribution, finite_loss, ok


def unroll(problem: MetaProblem, thetas: Any, state: SlotState, *, freeze_diverged_state: bool = True
           ) -> tuple[SlotState, UnrollOutput]:
    """Advances every slot and member by ``K`` inner steps in one ``lax.scan``.

    Differentiable with respect to ``thetas`` (truncated backprop through time).

    A member whose loss turns non-finite is frozen for the rest of the unroll: its params do not
    move and it scores the clip value. Its optimizer state is frozen too unless
    ``freeze_diverged_state=False``, which the evolution-strategies estimators pass: they never
    differentiate through the unroll, and a diverged slot is marked finished and replaced by a
    fresh episode before its state is read again, so freezing that state only costs a select over
    the whole optimizer state every inner step. That select cannot fuse into a fused kernel's
    output (``lopt.kernels``) and keeps the kernel from updating the state in place (XLA copies it
    first): ~15% of a PES outer step at 1,024 tasks with the fused ``mlp`` step on an H200.

    Args:
        problem: the meta-problem.
        thetas: meta-parameters with leading axes ``[N, M]`` (one theta per slot and member).
        state: slots after :func:`reset_finished` (no slot may be finished).
        freeze_diverged_state: keep a diverged member's optimizer state as it was (needed where
            the unroll is differentiated: non-finite state would reach theta's gradient).

    Returns:
        The advanced state (diverged slots marked finished) and the :class:`UnrollOutput`.
    """
    member = functools.partial(_member_step, problem, freeze_diverged_state)
    over_members = jax.vmap(member, in_axes=(0, 0, 0, 0, None, None, None, None))
    over_slots = jax.vmap(over_members, in_axes=(0, 0, 0, 0, 0, 0, 0, 0))
    num_tasks, num_members = state.step.shape[0], state.num_members

    def body(carry, _):
        params, opt_state, diverged, step = carry
        params, opt_state, diverged, contribution, loss, ok = over_slots(
            thetas, params, opt_state, diverged, state.task_index, step, state.horizon, state.episode_key)
        return (params, opt_state, diverged, step + 1), (contribution, loss, ok)

    init = (state.params, state.opt_state, jnp.zeros((num_tasks, num_members), bool), state.step)
    (params, opt_state, diverged, step), (contributions, losses, oks) = jax.lax.scan(
        body, init, None, length=problem.unroll_length)
    finite_steps = oks.sum(axis=0)
    train_loss = jnp.where(finite_steps > 0, losses.sum(axis=0) / jnp.maximum(finite_steps, 1), jnp.nan)
    any_diverged = diverged.any(axis=1)
    new_state = dataclasses.replace(state, params=params, opt_state=opt_state,
                                    step=jnp.where(any_diverged, state.horizon, step))
    return new_state, UnrollOutput(meta_loss=contributions.mean(axis=0), diverged=diverged, train_loss=train_loss)
