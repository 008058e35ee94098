"""Held-out validation of a mixture run: train held-out configs with theta, report normalised losses.

A :class:`HeldoutEvaluator` serves a fixed list of held-out pools, one per structure (configs that
training never draws: other variants of the training structures, and whole held-out structures).
On first use it fits each pool's normalisers (Adam over the learning-rate grid, through the
caller's ``fit``, which may read them from a cache) and compiles one evaluation program per
pool, in parallel threads; every later :meth:`HeldoutEvaluator.evaluate` reuses the programs for
any theta of the same shapes. With a :class:`~lopt.meta.program_cache.ProgramCache` the programs
are exported once and read back by every later run of the same code and shapes (the campaign's 9
validation programs on the 2-core CPU: 42 s traced, 102 s exported the first time, 4 s read back).
The score of a config is its normalised mean training loss over the last tenth of an
``eval_steps`` run (:func:`lopt.meta.normalizer.normalize_loss`: 1 at the initial loss, 0 at tuned
Adam's best).

Configs whose normaliser measures nothing (no Adam run of the grid lowered the loss by 1%,
:func:`lopt.meta.structure_normalizer.informative`) are run but left out of every mean: their
normalised loss is noise.

Example:
    >>> import jax, lopt
    >>> from lopt.meta.heldout_evaluation import HeldoutEvaluator
    >>> from lopt.meta.structure_normalizer import fit_structure
    >>> configs = [{"family": "quadratic", "dim": 4, "seed": s} for s in range(2)]
    >>> evaluator = HeldoutEvaluator(lopt.learned.get("learnable_adam"), [("quadratic", configs)],
    ...     eval_steps=20, fit=lambda cfgs, pool, steps: fit_structure(pool, num_steps=steps))
    >>> theta = evaluator.lopt.init(jax.random.key(0))
    >>> scores = evaluator.evaluate(theta, key=jax.random.key(1))
    >>> scores["heldout_configs"], -2.0 <= scores["heldout/quadratic"] <= 2.0
    (2.0, True)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lopt
from lopt.host_transfer import to_device
from lopt.learned.base import LearnedOptimizer
from lopt.meta.normalizer import LossNormalizer, normalize_loss
from lopt.meta.program_cache import ProgramCache
from lopt.meta.structure_normalizer import informative
from lopt.tasks import build, stack, structure_key, vmap_axes

__all__ = ["STRUCTURE_PREFIX", "HeldoutEvaluator", "HeldoutPool", "heldout_scores"]

_LOG = logging.getLogger("lopt.meta")
_MAX_THREADS = 16

#: Prefix of the per-structure scores :meth:`HeldoutEvaluator.evaluate` returns.
STRUCTURE_PREFIX = "heldout_structure/"

#: ``fit(configs, stacked_pool, num_steps) -> normalisers``: Adam-grid fits of a pool's configs.
FitFn = Callable[[list, Any, int], list[LossNormalizer]]


def heldout_scores(lopt_: LearnedOptimizer, pool: Any, initial: jax.Array, best: jax.Array, theta: Any,
                   key: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """Normalised final training loss and divergence flag of every config of a stacked pool.

    Each config is trained for ``num_steps`` with ``lopt_.optimizer(theta, num_steps=num_steps)``
    under its own key (``key`` split per config); its final loss is the mean training loss over the
    last tenth of the run, normalised with ``initial``/``best`` (``[P]`` each).
    """
    tail = max(1, num_steps // 10)

    def one(task, init, bst, k):
        curves = lopt.inner.train(task, lopt_.optimizer(theta, num_steps=num_steps), key=k,
                                  num_steps=num_steps, eval_every=num_steps, eval_batches=2)
        final = jnp.nanmean(curves.train_loss[-tail:])
        return normalize_loss(final, init, bst), curves.diverged

    keys = jax.random.split(key, initial.shape[0])
    return jax.vmap(one, in_axes=(vmap_axes(pool), 0, 0, 0))(pool, initial, best, keys)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A learned optimizer as a leafless pytree node: a cached program's key holds its ``repr``."""

    lopt: LearnedOptimizer


def _scores_of_fixed(fixed: _Fixed, pool: Any, initial: jax.Array, best: jax.Array, theta: Any, key: jax.Array,
                     num_steps: int) -> tuple[jax.Array, jax.Array]:
    """:func:`heldout_scores` with the learned optimizer in the arguments (what a program cache takes)."""
    return heldout_scores(fixed.lopt, pool, initial, best, theta, key, num_steps)


@dataclasses.dataclass
class HeldoutPool:
    """One held-out structure, ready to evaluate: its configs stacked, their normalisers on device.

    Attributes:
        family: the base family (the key of the ``heldout/<family>`` mean).
        name: the structure key.
        pool: the configs' tasks stacked (:func:`lopt.tasks.stack`).
        initial: ``[P]`` initial losses of the normalisers.
        best: ``[P]`` best losses of the normalisers.
        informative: ``[P]`` which configs' normalisers measure anything (the rest stay out of the means).
    """

    family: str
    name: str
    pool: Any
    initial: jax.Array
    best: jax.Array
    informative: np.ndarray


class HeldoutEvaluator:
    """Scores a theta on fixed held-out pools, one compiled program per pool.

    Args:
        lopt_: the learned optimizer.
        pools: ``(family, configs)`` per held-out structure (configs of one structure each).
        eval_steps: inner steps of each held-out run.
        fit: fits a pool's normalisers (e.g. a cached :func:`lopt.meta.structure_normalizer.fit_structure`).
        program_cache: where the evaluation programs are exported and read back (``None``: traced
            and compiled in every process).

    Raises:
        ValueError: ``eval_steps`` is not a positive int, or a pool has no configs.
    """

    def __init__(self, lopt_: LearnedOptimizer, pools: Sequence[tuple[str, list]], *, eval_steps: int, fit: FitFn,
                 program_cache: ProgramCache | None = None):
        if isinstance(eval_steps, bool) or not isinstance(eval_steps, int) or eval_steps < 1:
            raise ValueError(f"HeldoutEvaluator: eval_steps={eval_steps!r} must be a positive int.")
        for family, configs in pools:
            if not configs:
                raise ValueError(f"HeldoutEvaluator: the held-out pool of {family!r} has no configs; "
                                 "give every pool at least one config.")
        self.lopt, self.eval_steps, self._fit, self.program_cache = lopt_, eval_steps, fit, program_cache
        self._configs = [(family, list(configs)) for family, configs in pools]
        self._pools: list[HeldoutPool] | None = None
        self._programs: list | None = None
        self.fn = jax.jit(functools.partial(heldout_scores, lopt_), static_argnames=("num_steps",))

    def pools(self) -> list[HeldoutPool]:
        """The held-out pools with their normalisers, fitted (in parallel threads) on first use."""
        if self._pools is None:
            def one(item):
                family, configs, pool = item
                fits = self._fit(configs, pool, self.eval_steps)
                return HeldoutPool(family, structure_key(configs[0]), pool,
                                   to_device([n.initial_loss for n in fits], np.float32),
                                   to_device([n.best_loss for n in fits], np.float32),
                                   np.asarray([informative(n) for n in fits]))

            # tasks are built in this thread (datasets load once, shared by a structure's configs)
            items = [(family, configs, stack([build(c) for c in configs])) for family, configs in self._configs]
            with concurrent.futures.ThreadPoolExecutor(max_workers=_MAX_THREADS) as threads:
                self._pools = list(threads.map(one, items))
        return self._pools

    def programs(self, theta: Any, key: jax.Array) -> list:
        """One compiled evaluation program per pool, compiled concurrently once and then reused.

        Compiled one after another, 9 structures' programs took over 7 minutes on an H200.
        """
        if self._programs is None:
            pools, start, fixed = self.pools(), time.perf_counter(), _Fixed(self.lopt)

            def one(index: int):
                held = pools[index]
                args = (held.pool, held.initial, held.best, theta, jax.random.fold_in(key, index))
                if self.program_cache is None:
                    program, how = self.fn.lower(*args, num_steps=self.eval_steps).compile(), "traced"
                else:
                    cached = self.program_cache.compile(_scores_of_fixed, (fixed, *args), name=f"heldout-{held.family}",
                                                        static={"num_steps": self.eval_steps})
                    program, how = functools.partial(cached, fixed), cached.origin
                _LOG.info("compiled evaluation %d (%s, %s), %.0f s since the start", index, held.family, how,
                          time.perf_counter() - start)
                return program

            with concurrent.futures.ThreadPoolExecutor(max_workers=min(_MAX_THREADS, max(1, len(pools)))) as threads:
                self._programs = list(threads.map(one, range(len(pools))))
        return self._programs

    def evaluate(self, theta: Any, *, key: jax.Array) -> dict[str, float]:
        """Trains every held-out config for ``eval_steps`` with theta; normalised final losses.

        Returns:
            ``heldout_normalized_loss`` (mean over structures that have an informative config),
            ``heldout/<family>`` means, ``heldout_structure/<structure key>`` means (the units the
            overall mean averages), ``heldout_diverged`` (count), ``heldout_configs`` (configs run)
            and ``heldout_uninformative`` (configs left out of the means).
        """
        pools, programs = self.pools(), self.programs(theta, key)
        by_family: dict[str, list[float]] = {}
        by_structure: dict[str, float] = {}  # the overall mean's units (a repeated structure key gets "#<pool>")
        diverged, count, left_out = 0, 0, 0
        for i, (held, program) in enumerate(zip(pools, programs)):
            scores, div = program(held.pool, held.initial, held.best, theta, jax.random.fold_in(key, i))
            scores, keep = np.asarray(scores, np.float64), held.informative
            diverged += int(np.asarray(div).sum())
            count += scores.size
            left_out += int((~keep).sum())
            if keep.any():
                mean = float(scores[keep].mean())
                by_family.setdefault(held.family, []).append(mean)
                by_structure[held.name if held.name not in by_structure else f"{held.name}#{i}"] = mean
        out = {"heldout_normalized_loss": float(np.mean(list(by_structure.values()))) if by_structure else float("nan"),
               "heldout_diverged": float(diverged), "heldout_configs": float(count),
               "heldout_uninformative": float(left_out)}
        out.update({f"heldout/{family}": float(np.mean(v)) for family, v in sorted(by_family.items())})
        out.update({f"{STRUCTURE_PREFIX}{name}": value for name, value in sorted(by_structure.items())})
        return out
