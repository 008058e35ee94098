"""Inner training: train one task with one optimizer as a single compiled ``lax.scan``.

Everything here is a pure function of pytrees, so it composes with ``jit`` and ``vmap``:
:func:`train` vmaps over seeds and over optimizer hyperparameters, and :func:`train_many`
packages exactly that (a 15-point learning-rate grid times several seeds is one program).

Randomness is indexed, not threaded: the batch of step ``t`` is drawn with
``fold_in(train_key, t)``, so training in one scan or in several chunks (as the CLI does, to
show progress) gives identical results. Evaluation uses a fixed set of batches per split, so
curves are not noisier than the model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.learned.base import reads_valid_loss
from lopt.tasks.base import Task

__all__ = ["BLOW_UP_FACTOR", "Curves", "InnerState", "evaluate", "init_state", "iterate", "num_evals", "run_steps",
           "train", "train_many"]

EVAL_SPLITS = ("valid", "test")
#: ``fold_in`` stream of the per-step validation batches a learned optimizer may read (disjoint
#: from the training batches' ``fold_in(key, t)``).
VALID_STREAM = 2**31 - 2

#: A run *blew up* when its final loss is more than this many times its initial loss (see
#: :meth:`Curves.blew_up`); ``diverged`` is kept for non-finite losses or params.
BLOW_UP_FACTOR = 5.0


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params", "opt_state", "step", "diverged",
                                                                  "diverged_step"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class InnerState:
    """The state of one inner training run.

    Attributes:
        params: the task's current params (frozen at their last finite value after divergence).
        opt_state: the optimizer's state.
        step: number of inner steps taken so far.
        diverged: whether a non-finite loss or non-finite params were met.
        diverged_step: the step at which that happened (``-1`` if never).
    """

    params: Any
    opt_state: Any
    step: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["train_loss", "eval_steps", "valid_loss", "valid_accuracy", "test_loss",
                                "test_accuracy", "diverged", "diverged_step"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Curves:
    """Learning curves of one (or, with leading batch axes, many) inner training runs.

    Attributes:
        train_loss: ``[num_steps]`` training loss of the batch at every step (NaN after divergence).
        eval_steps: ``[num_evals]`` the steps at which valid/test were evaluated (0 and the end included).
        valid_loss, valid_accuracy, test_loss, test_accuracy: ``[num_evals]`` (accuracy is NaN
            for tasks without one; everything is NaN after divergence).
        diverged: whether the run diverged: met a non-finite loss or non-finite params.
        diverged_step: first non-finite step, ``-1`` if none.

    A run that stays finite but ends far above where it started (e.g. Adam at learning rate 10)
    is not ``diverged``; :meth:`blew_up` flags it, and :meth:`summary` reports both, with
    ``unstable`` for either.
    """

    train_loss: jax.Array
    eval_steps: jax.Array
    valid_loss: jax.Array
    valid_accuracy: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array

    def blew_up(self, factor: float = BLOW_UP_FACTOR, tail: int = 10) -> jax.Array:
        """Whether each run ended far above where it started, while staying finite.

        A run blew up when the mean of its last ``tail`` finite training losses exceeds its first
        training loss by more than ``factor`` times, or its final validation loss exceeds its
        validation loss at step 0 by as much: ``final > initial + (factor - 1) * |initial|`` (which
        is ``final > factor * initial`` for positive losses, and still meaningful for negative
        ones). Non-finite runs are ``diverged`` instead and never blew up.

        Args:
            factor: the multiple of the initial loss (> 1).
            tail: training losses averaged for the final value.

        Returns:
            A bool array with the curves' batch shape (a scalar for one run).

        Example:
            >>> import jax, optax, lopt
            >>> task = lopt.tasks.build({"family": "quadratic", "dim": 5})
            >>> run = lambda lr: lopt.inner.train(task, optax.sgd(lr), key=jax.random.key(0), num_steps=30)
            >>> bool(run(0.1).blew_up()), bool(run(3.0).blew_up()), bool(run(3.0).diverged)
            (False, True, False)
        """
        if not factor > 1:
            raise ValueError(f"Curves.blew_up: factor={factor!r} must be > 1, e.g. {BLOW_UP_FACTOR}.")
        train = jnp.asarray(self.train_loss)
        finite = jnp.isfinite(train)
        counts = jnp.cumsum(finite[..., ::-1], axis=-1)[..., ::-1]  # finite losses from step t to the end
        last = finite & (counts <= tail)
        final_train = jnp.where(last, train, 0.0).sum(-1) / jnp.maximum(last.sum(-1), 1)

        def above(final, initial):
            return jnp.isfinite(final) & jnp.isfinite(initial) & (final > initial + (factor - 1) * jnp.abs(initial))

        valid = jnp.asarray(self.valid_loss)
        return (above(final_train, train[..., 0]) & last.any(-1)) | above(valid[..., -1], valid[..., 0])

    def summary(self, tail: int = 10) -> dict[str, float]:
        """Host-side summary of a single run: final losses and accuracies, divergence and blow-up.

        Args:
            tail: the final training loss is the mean over the last ``tail`` steps.

        Returns:
            ``final_*``/``min_train_loss`` numbers, ``initial_train_loss`` (step 1's batch),
            ``initial_valid_loss`` (at step 0), and the flags
            ``diverged`` (non-finite), ``blew_up`` (finite but ended above ``BLOW_UP_FACTOR``
            times the initial loss, see :meth:`blew_up`) and ``unstable`` (either).
        """
        if np.ndim(self.diverged) != 0:
            raise ValueError("Curves.summary() is for a single run; index the batch axes first, "
                             "e.g. jax.tree.map(lambda x: x[0], curves).")
        train = np.asarray(self.train_loss)
        diverged, blew_up = bool(self.diverged), bool(self.blew_up(tail=tail))
        return {
            "initial_train_loss": float(train[0]) if train.size else float("nan"),
            "initial_valid_loss": float(self.valid_loss[0]),
            "final_train_loss": float(np.mean(train[-tail:])),
            "min_train_loss": float(np.nanmin(train)) if np.isfinite(train).any() else float("nan"),
            "final_valid_loss": float(self.valid_loss[-1]),
            "final_valid_accuracy": float(self.valid_accuracy[-1]),
            "final_test_loss": float(self.test_loss[-1]),
            "final_test_accuracy": float(self.test_accuracy[-1]),
            "diverged": diverged,
            "diverged_step": int(self.diverged_step),
            "blew_up": blew_up,
            "unstable": diverged or blew_up,
        }


def _as_extra_args(optimizer: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3) or "
                        f"lopt.optimizers.get('adam', learning_rate=1e-3)), got {type(optimizer).__name__}.")
    return optax.with_extra_args_support(optimizer)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def init_state(task: Task, optimizer: optax.GradientTransformation, *, key: jax.Array) -> InnerState:
    """Initialises params with ``key`` and the optimizer's state."""
    params = task.init(key)
    return InnerState(params=params, opt_state=_as_extra_args(optimizer).init(params),
                      step=jnp.array(0, jnp.int32), diverged=jnp.array(False),
                      diverged_step=jnp.array(-1, jnp.int32))


def _train_step(task: Task, optimizer: optax.GradientTransformationExtraArgs, key: jax.Array, with_valid: bool,
                state: InnerState) -> tuple[InnerState, jax.Array]:
    batch = task.sample_batch(jax.random.fold_in(key, state.step), "train")
    loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
    extra = {}
    if with_valid:  # as in meta-training: the loss of one validation batch at the current params
        valid_key = jax.random.fold_in(jax.random.fold_in(key, VALID_STREAM), state.step)
        extra["valid_loss"] = task.loss(state.params, task.sample_batch(valid_key, "valid"))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, loss=loss, **extra)
    params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & _all_finite(params) & ~state.diverged
    newly_diverged = ~ok & ~state.diverged
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = InnerState(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        diverged=~ok,
        diverged_step=jnp.where(newly_diverged, state.step, state.diverged_step),
    )
    recorded = jnp.where(state.diverged, jnp.nan, loss)
    return new_state, recorded


def run_steps(task: Task, optimizer: optax.GradientTransformation, state: InnerState, *, key: jax.Array,
              num_steps: int, valid_loss: bool | None = None) -> tuple[InnerState, jax.Array]:
    """Advances ``state`` by ``num_steps`` inner steps in one ``lax.scan``.

    Args:
        task: the task (its data is read from the pytree, not baked in).
        optimizer: any optax transformation; learned optimizers receive ``loss=`` as an extra arg.
        state: from :func:`init_state` or a previous call.
        key: the run's training key (batch ``t`` is drawn with ``fold_in(key, t)``).
        num_steps: how many steps (static).
        valid_loss: pass each step's validation loss (one ``"valid"`` batch, drawn with
            ``fold_in(fold_in(key, VALID_STREAM), t)``) as the extra arg ``valid_loss``. Default:
            when the optimizer reads it (:func:`lopt.learned.reads_valid_loss`), as meta-training does.

    Returns:
        The new state and the ``[num_steps]`` training losses (NaN once diverged).
    """
    with_valid = reads_valid_loss(optimizer) if valid_loss is None else bool(valid_loss)
    optimizer = _as_extra_args(optimizer)
    step = functools.partial(_train_step, task, optimizer, key, with_valid)
    return jax.lax.scan(lambda s, _: step(s), state, None, length=num_steps)


def evaluate(task: Task, state: InnerState, *, key: jax.Array, num_batches: int) -> dict[str, jax.Array]:
    """Mean loss and accuracy over ``num_batches`` fixed batches of the valid and test splits.

    Returns:
        ``{"valid_loss", "valid_accuracy", "test_loss", "test_accuracy"}`` scalars (NaN where
        not applicable or after divergence).
    """
    out = {}
    for index, split in enumerate(EVAL_SPLITS):
        keys = jax.random.split(jax.random.fold_in(key, index), num_batches)

        def one(k, split=split):
            metrics = task.metrics(state.params, task.sample_batch(k, split))
            return metrics["loss"], metrics.get("accuracy", jnp.nan)

        losses, accuracies = jax.lax.map(one, keys)
        nan_if_diverged = lambda x: jnp.where(state.diverged, jnp.nan, jnp.mean(x))
        out[f"{split}_loss"] = nan_if_diverged(losses)
        out[f"{split}_accuracy"] = nan_if_diverged(accuracies).astype(jnp.float32)
    return out


def _check_schedule(num_steps: int, eval_every: int | None, eval_batches: int) -> int:
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive integer.")
    if eval_every is None:
        eval_every = max(1, num_steps // 20)
    if not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every={eval_every!r} must be a positive integer (or None for num_steps // 20).")
    if not isinstance(eval_batches, (int, np.integer)) or eval_batches < 1:
        raise ValueError(f"eval_batches={eval_batches!r} must be a positive integer.")
    return int(min(eval_every, num_steps))


def _split_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax.random key (e.g. jax.random.key(0)), got {type(key).__name__}.")
    init_key, train_key, eval_key = jax.random.split(key, 3)
    return init_key, train_key, eval_key


def _chunks(num_steps: int, eval_every: int) -> list[int]:
    full, rest = divmod(num_steps, eval_every)
    return [eval_every] * full + ([rest] if rest else [])


def _assemble(losses: list[jax.Array], evals: list[dict[str, jax.Array]], eval_steps: list[int],
              state: InnerState) -> Curves:
    stacked = {k: jnp.concatenate([jnp.atleast_1d(e[k]) for e in evals]) for k in evals[0]}
    return Curves(train_loss=jnp.concatenate(losses), eval_steps=jnp.asarray(eval_steps, jnp.int32),
                  diverged=state.diverged, diverged_step=state.diverged_step, **stacked)


def train(task: Task, optimizer: optax.GradientTransformation, *, key: jax.Array, num_steps: int,
          eval_every: int | None = None, eval_batches: int = 16, return_state: bool = False,
          valid_loss: bool | None = None):
    """Trains ``task`` with ``optimizer`` for ``num_steps`` steps as one traced program.

    Pure and traceable: wrap it in ``jax.jit`` and ``jax.vmap`` (over keys, over optimizer
    hyperparameters built inside the mapped function) freely. Divergence (non-finite loss or
    params) is detected and recorded in the curves; it never raises.

    Args:
        task: the task to train.
        optimizer: an optax transformation (a learned optimizer's gets ``loss=`` each step).
        key: PRNG key for init, batches and evaluation batches.
        num_steps: number of inner steps.
        eval_every: evaluate valid/test every this many steps (default ``num_steps // 20``);
            also evaluated at step 0 and at the end.
        eval_batches: batches averaged per evaluation and split.
        return_state: also return the final :class:`InnerState`.
        valid_loss: pass each step's validation loss to the optimizer (see :func:`run_steps`;
            default: when it reads it).

    Returns:
        :class:`Curves` (and the final state if ``return_state``).

    Example:
        >>> import jax, optax, lopt
        >>> task = lopt.tasks.build({"family": "quadratic", "dim": 5})
        >>> curves = lopt.inner.train(task, optax.adam(0.1), key=jax.random.key(0), num_steps=100)
        >>> bool(curves.train_loss[-1] < curves.train_loss[0])
        True
    """
    eval_every = _check_schedule(num_steps, eval_every, eval_batches)
    init_key, train_key, eval_key = _split_key(key)
    state = init_state(task, optimizer, key=init_key)
    evaluate_state = functools.partial(evaluate, task, key=eval_key, num_batches=eval_batches)
    chunks = _chunks(num_steps, eval_every)
    num_full = num_steps // eval_every

    def one_chunk(state, _):
        state, losses = run_steps(task, optimizer, state, key=train_key, num_steps=eval_every, valid_loss=valid_loss)
        return state, (losses, evaluate_state(state))

    losses, evals = [], [evaluate_state(state)]
    state, (chunk_losses, chunk_evals) = jax.lax.scan(one_chunk, state, None, length=num_full)
    losses.append(chunk_losses.reshape(-1))
    evals.append(chunk_evals)
    if len(chunks) > num_full:
        state, rest = run_steps(task, optimizer, state, key=train_key, num_steps=chunks[-1], valid_loss=valid_loss)
        losses.append(rest)
        evals.append(evaluate_state(state))
    curves = _assemble(losses, evals, list(np.cumsum([0, *chunks])), state)
    return (curves, state) if return_state else curves


def iterate(task: Task, optimizer: optax.GradientTransformation, *, key: jax.Array, num_steps: int,
            eval_every: int | None = None, eval_batches: int = 16, valid_loss: bool | None = None
            ) -> Iterator[tuple[int, jax.Array, dict[str, jax.Array], InnerState]]:
    """Like :func:`train`, but yields after each evaluation (for progress bars).

    Each chunk between evaluations is one compiled ``lax.scan``; results are identical to
    :func:`train` with the same arguments. Yields ``(step, chunk_train_losses, eval_metrics,
    state)``, starting with step 0 (empty losses).
    """
    eval_every = _check_schedule(num_steps, eval_every, eval_batches)
    init_key, train_key, eval_key = _split_key(key)
    evaluate_state = jax.jit(functools.partial(evaluate, task, key=eval_key, num_batches=eval_batches))
    state = jax.jit(functools.partial(init_state, task, optimizer))(key=init_key)
    yield 0, jnp.zeros((0,)), evaluate_state(state), state
    advance = jax.jit(lambda s, n: run_steps(task, optimizer, s, key=train_key, num_steps=n, valid_loss=valid_loss),
                      static_argnums=1)
    step = 0
    for n in _chunks(num_steps, eval_every):
        state, losses = advance(state, n)
        step += n
        yield step, losses, evaluate_state(state), state


@functools.partial(jax.jit, static_argnames=("optimizer_fn", "num_steps", "eval_every", "eval_batches"))
def _train_grid(task, optimizer_fn, hparams, keys, num_steps, eval_every, eval_batches):
    def one(h, k):
        return train(task, optimizer_fn(**h), key=k, num_steps=num_steps, eval_every=eval_every,
                     eval_batches=eval_batches)

    over_seeds = jax.vmap(one, in_axes=(None, 0))
    return jax.vmap(over_seeds, in_axes=(0, None))(hparams, keys)


def train_many(task: Task, optimizer_fn: Callable[..., optax.GradientTransformation],
               hparams: dict[str, Any], *, key: jax.Array, num_seeds: int = 1, num_steps: int,
               eval_every: int | None = None, eval_batches: int = 16) -> Curves:
    """Trains every hyperparameter setting with every seed as one compiled, vmapped program.

    Args:
        task: the task (data passed into the program, not baked in).
        optimizer_fn: builds an optax transformation from keyword hyperparameters, e.g.
            ``lopt.optimizers.adam`` or ``optax.sgd``. Pass the same function object each time
            to reuse the compiled program.
        hparams: ``{name: array of shape [G]}``; every entry has the same length ``G``.
        key: PRNG key; seed ``s`` uses ``fold_in(key, s)`` (the same seeds for every setting).
        num_seeds: ``S``, number of seeds.
        num_steps, eval_every, eval_batches: as in :func:`train`.

    Returns:
        :class:`Curves` whose arrays have leading axes ``[G, S]``.

    Example:
        >>> import jax, optax, numpy as np, lopt
        >>> task = lopt.tasks.build({"family": "quadratic", "dim": 5})
        >>> lrs = np.logspace(-3, 0, 4)
        >>> curves = lopt.inner.train_many(task, optax.adam, {"learning_rate": lrs},
        ...                                key=jax.random.key(0), num_seeds=2, num_steps=50)
        >>> curves.train_loss.shape
        (4, 2, 50)
    """
    if not callable(optimizer_fn):
        raise TypeError(f"optimizer_fn must be callable (e.g. optax.adam), got {optimizer_fn!r}.")
    if not isinstance(hparams, dict) or not hparams:
        raise ValueError("hparams must be a non-empty dict of equal-length arrays, e.g. "
                         "{'learning_rate': np.logspace(-4, 0, 15)}.")
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
    lengths = {k: (v.shape[0] if v.ndim == 1 else None) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"hparams must all be 1-D arrays of one length; got lengths {lengths}.")
    _check_hparams(optimizer_fn, arrays)
    if not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds!r} must be a positive integer.")
    eval_every = _check_schedule(num_steps, eval_every, eval_batches)
    _split_key(key)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(num_seeds))
    return _train_grid(task, optimizer_fn, arrays, keys, int(num_steps), eval_every, int(eval_batches))


def _check_hparams(optimizer_fn: Callable[..., optax.GradientTransformation], arrays: dict[str, jax.Array]) -> None:
    """Every setting must be finite, learning rates positive, and accepted by ``optimizer_fn``.

    ``optimizer_fn`` is called once per setting with concrete values, so factories that check
    their hyperparameters (every :mod:`lopt.optimizers` factory) reject bad values here, with
    their own message, before anything is traced.
    """
    host = {name: np.asarray(values) for name, values in arrays.items()}
    for name, values in host.items():
        bad = np.flatnonzero(~np.isfinite(values) | ((values <= 0) if name == "learning_rate" else False))
        if bad.size:
            need = "finite and > 0" if name == "learning_rate" else "finite"
            raise ValueError(f"train_many: hparams[{name!r}][{bad[0]}]={values[bad[0]]:g} must be {need}; "
                             f"e.g. {{'learning_rate': np.logspace(-4, 0, 15)}}.")
    for index in range(next(iter(host.values())).shape[0]):
        optimizer_fn(**{name: values[index] for name, values in host.items()})


def num_evals(num_steps: int, eval_every: int) -> int:
    """Number of evaluation points :func:`train` records (step 0, every ``eval_every``, the end)."""
    return 1 + math.ceil(num_steps / eval_every)
