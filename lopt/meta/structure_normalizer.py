"""Normalisers for many configs of one structure, fitted in one vectorised program.

:func:`lopt.meta.fit_normalizer` trains one config with Adam over a learning-rate grid. A
mixture run has thousands of configs, so here every config of a structure (a stacked pool)
is trained with every learning rate and seed in *one* compiled program, and configs drawn
later (new dynamic variants of the same structure) get a normaliser without any Adam run:

* :func:`fit_structure` measures ``(initial_loss, best_loss)`` for each config of a stacked pool.
* :func:`initial_losses` measures only the initial loss (a forward pass on a few seeds).
* :func:`extrapolate` turns a new config's initial loss into a normaliser with the structure's
  median relative gap ``(initial - best) / |initial|`` (exact under loss scaling, which is what
  most dynamic augmentations do to a task's loss).

Example:
    >>> import lopt
    >>> from lopt.meta.structure_normalizer import fit_structure
    >>> cfgs = [{"family": "quadratic", "dim": 4, "seed": s} for s in range(3)]
    >>> pool = lopt.tasks.stack([lopt.tasks.build(c) for c in cfgs])
    >>> fits = fit_structure(pool, num_steps=50, learning_rates=(0.01, 0.1))
    >>> len(fits), all(n.best_loss < n.initial_loss for n in fits)
    (3, True)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import jax
import numpy as np

from lopt import inner, optimizers
from lopt.host_transfer import to_device
from lopt.meta.normalizer import DEFAULT_LEARNING_RATES, LossNormalizer
from lopt.meta.program_cache import ProgramCache
from lopt.meta.trace_gate import compile_gated
from lopt.tasks import Task, vmap_axes

__all__ = ["MIN_RELATIVE_GAP", "extrapolate", "fit_structure", "informative", "initial_losses", "relative_gap"]

_SMOOTHING = 20

#: A config whose best Adam run did not lower the loss by this fraction of ``|initial|`` gets this
#: gap as its normaliser's (the map must exist), which makes the map meaningless: see :func:`informative`.
MIN_RELATIVE_GAP = 0.01


@functools.partial(jax.jit, static_argnames=("num_steps", "num_seeds"))
def _grid_curves(pool: Task, learning_rates: jax.Array, key: jax.Array, num_steps: int, num_seeds: int):
    def one(task, lr, seed_key):
        # inner.train's training curve (the same keys: init, train, unused eval key) without its
        # evaluations, which the fit never reads: a smaller program to trace and compile
        optimizer = optimizers.adam(learning_rate=lr)
        init_key, train_key, _ = jax.random.split(seed_key, 3)
        state = inner.init_state(task, optimizer, key=init_key)
        state, losses = inner.run_steps(task, optimizer, state, key=train_key, num_steps=num_steps)
        return losses, state.diverged

    seeds = jax.random.split(key, num_seeds)
    over_seeds = jax.vmap(one, in_axes=(None, None, 0))
    over_lrs = jax.vmap(over_seeds, in_axes=(None, 0, None))
    return jax.vmap(over_lrs, in_axes=(vmap_axes(pool), None, None))(pool, learning_rates, seeds)


def _smoothed_min(curve: np.ndarray, window: int) -> float:
    kernel = np.ones(window) / window
    return float(np.min(np.convolve(curve, kernel, mode="valid")))


def fit_structure(pool: Task, *, num_steps: int = 1000, learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
                  num_seeds: int = 1, key: jax.Array | None = None,
                  programs: ProgramCache | None = None,
                  seconds: dict[str, float] | None = None) -> list[LossNormalizer]:
    """Fits a normaliser for every config of a stacked pool in one compiled program.

    Same definition as :func:`lopt.meta.fit_normalizer` (initial loss: mean training loss at
    step 0; best loss: the lowest smoothed mean training curve over the learning rates, runs that
    diverged ignored), computed for all ``P`` configs x ``G`` rates x ``S`` seeds at once.

    Args:
        pool: configs of one structure stacked with :func:`lopt.tasks.stack`.
        num_steps: Adam steps per run.
        learning_rates: the Adam grid.
        num_seeds: seeds per rate.
        key: PRNG key (default ``jax.random.key(0)``).
        programs: where the compiled program comes from and goes (default: traced here,
            kept in memory by :func:`lopt.meta.trace_gate.compile_gated`).
        seconds: a dict this fills with where the fit took its time: ``program`` (getting the
            compiled program; with ``programs`` also its stages, as ``_Program.seconds``) and
            ``run`` (running it and reading the curves back).

    Returns:
        ``P`` normalisers. A config that Adam never improved gets a 1% gap so the map exists.

    Raises:
        ValueError: bad settings, or a config whose initial loss is not finite.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"fit_structure: num_steps={num_steps!r} must be an int >= 2.")
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"fit_structure: num_seeds={num_seeds!r} must be a positive int.")
    lrs = np.asarray(learning_rates, np.float32)
    if lrs.ndim != 1 or not lrs.size or np.any(lrs <= 0):
        raise ValueError(f"fit_structure: learning_rates={learning_rates!r} must be positive numbers.")
    key = jax.random.key(0) if key is None else key
    lrs_device = to_device(lrs)
    start = time.perf_counter()
    if programs is None:
        program = compile_gated(_grid_curves, pool, lrs_device, key, num_steps=num_steps, num_seeds=num_seeds)
    else:
        program = programs.compile(_grid_curves.__wrapped__, (pool, lrs_device, key), name="fit",
                                   static={"num_steps": num_steps, "num_seeds": num_seeds})
    made = time.perf_counter()
    losses, diverged = program(pool, lrs_device, key)
    losses, diverged = np.asarray(losses, np.float64), np.asarray(diverged)  # [P, G, S, T], [P, G, S]
    if seconds is not None:
        seconds.update(getattr(program, "seconds", {}), program=made - start, run=time.perf_counter() - made)
    window = min(_SMOOTHING, num_steps)
    out = []
    for p in range(losses.shape[0]):
        initial = float(np.mean(losses[p, :, :, 0]))
        if not math.isfinite(initial):
            raise ValueError(f"fit_structure: config {p} of the pool has a non-finite initial loss {initial}.")
        best = math.inf
        for g in range(losses.shape[1]):
            ok = ~diverged[p, g] & np.all(np.isfinite(losses[p, g]), axis=-1)
            if ok.any():
                best = min(best, _smoothed_min(losses[p, g, ok].mean(axis=0), window))
        gap = _floor_gap(initial)
        best = best if math.isfinite(best) and best < initial - gap else initial - gap
        out.append(LossNormalizer(initial_loss=initial, best_loss=best))
    return out


@functools.partial(jax.jit, static_argnames=("num_seeds",))
def _initial_losses(pool: Task, key: jax.Array, num_seeds: int) -> jax.Array:
    def one(task, k):
        init_key, batch_key = jax.random.split(k)
        params = task.init(init_key)
        return task.loss(params, task.sample_batch(batch_key, "train"))

    over_seeds = jax.vmap(one, in_axes=(None, 0))
    keys = jax.random.split(key, num_seeds)
    return jax.vmap(over_seeds, in_axes=(vmap_axes(pool), None))(pool, keys).mean(axis=1)


def initial_losses(pool: Task, *, num_seeds: int = 4, key: jax.Array | None = None) -> np.ndarray:
    """``[P]`` mean training loss of freshly initialised params over ``num_seeds`` inits and batches.

    Example:
        >>> import lopt
        >>> pool = lopt.tasks.stack([lopt.tasks.build({"family": "quadratic", "dim": 3, "seed": s})
        ...                          for s in range(2)])
        >>> initial_losses(pool).shape
        (2,)
    """
    key = jax.random.key(1) if key is None else key
    return np.asarray(_initial_losses(pool, key, int(num_seeds)), np.float64)


def _floor_gap(initial: float) -> float:
    """The gap :func:`fit_structure` gives a config that no Adam run improved by more."""
    return MIN_RELATIVE_GAP * max(abs(initial), 1e-6)


def informative(normalizer: LossNormalizer) -> bool:
    """Whether a fitted normaliser measures anything: tuned Adam lowered the loss by more than
    :data:`MIN_RELATIVE_GAP` of ``|initial|``.

    Where no Adam run of the grid got that far, :func:`fit_structure` sets the best loss to the
    floor ``initial - 1% |initial|``; on such a config (a losg problem whose loss barely moves in
    the run's length) an optimizer's normalised loss is its noise divided by 1% of the loss, and
    swings over the whole clipped range ``[-2, 2]`` from one seed to the next. Scores that rank
    optimizers leave these configs out.

    Example:
        >>> from lopt.meta.normalizer import LossNormalizer
        >>> informative(LossNormalizer(2.0, 1.0)), informative(LossNormalizer(15.0, 15.0 - 0.15))
        (True, False)
    """
    return normalizer.initial_loss - normalizer.best_loss > _floor_gap(normalizer.initial_loss) * (1 + 1e-6)


def relative_gap(normalizers: Sequence[LossNormalizer]) -> float:
    """The median of ``(initial - best) / |initial|`` over fitted normalisers of one structure."""
    gaps = [(n.initial_loss - n.best_loss) / max(abs(n.initial_loss), 1e-6) for n in normalizers]
    return float(np.median(gaps))


def extrapolate(initial: Sequence[float], gap: float) -> list[LossNormalizer]:
    """Normalisers for new configs of a structure from their initial losses and its relative gap.

    Example:
        >>> [n.best_loss for n in extrapolate([2.0, 4.0], 0.25)]
        [1.5, 3.0]
    """
    if not gap > 0:
        raise ValueError(f"extrapolate: gap={gap!r} must be positive (a structure whose loss goes down).")
    out = []
    for value in initial:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"extrapolate: a config's initial loss is {value}; the task is broken at init.")
        out.append(LossNormalizer(initial_loss=value, best_loss=value - gap * max(abs(value), 1e-6)))
    return out
