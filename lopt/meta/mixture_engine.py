"""Meta-training on a whole task mixture: every outer gradient averages every structure.

A :class:`MixtureEngine` serves ``B`` structures (shape buckets) of a task mixture:

* **Every bucket in every outer step.** Each bucket has its own estimator (a compiled program
  for its structure) and its own persistent state; an outer step runs all ``B`` estimates with
  the *same* theta and averages their gradients, so every update of theta follows several task
  kinds, and each bucket's PES state is always consistent with the theta it perturbs. The
  bucket programs are compiled ahead of time in parallel threads (on one device they start
  during the set-up, while the normalisers are fitted: the normalisers are array inputs) and
  dispatched back to back without host synchronisation (the trainer reads metrics one step late).
* **Breadth at a bounded compile count.** A bucket's pool holds two halves of
  ``configs_per_bucket`` configs. Every ``redraw_every`` outer steps one half is replaced by
  freshly drawn dynamic variants (init scales, data seeds, reparameterisations, loss scales)
  and becomes the half new episodes draw from; running episodes finish on the old half
  (``redraw_every * unroll_length`` must cover the longest horizon). New configs reuse the
  compiled program, so a long run sees thousands of configs with ``B`` programs.
* **Cheap normalisers.** The first draw of each structure is fitted with Adam over a
  learning-rate grid in one vectorised program per structure; later draws get their normaliser
  from their measured initial loss and the structure's relative gap
  (:mod:`lopt.meta.structure_normalizer`).
* **Held-out validation.** ``heldout_per_bucket`` variants of each structure are set aside
  before any training draw (and never drawn for training), plus whole held-out structures
  (e.g. families left out of training). :meth:`evaluate` trains them with the current theta and
  reports the normalised final loss per family.
* **Several devices.** With ``mesh``, every bucket's task axis is sharded over the devices
  (``jax.sharding``); theta and task data are replicated and the ES sums become all-reduces.
  The mesh may span several processes (:mod:`lopt.meta.distributed`): every process builds the
  same pools from the same seeds and places them with :func:`lopt.meta.distributed.put`.

Everything the engine draws is a deterministic function of ``(seed, bucket, redraw index)``,
so a resumed run rebuilds the exact pools of the step it resumes from.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.flatten_util
import numpy as np

from lopt.flops import FlopCount, jaxpr_flops
from lopt.host_transfer import to_device
from lopt.learned.base import LearnedOptimizer
from lopt.meta import distributed
from lopt.meta.bucket_gradients import BUCKET_WEIGHTINGS, combine
from lopt.meta.estimators import PES
from lopt.meta.heldout_evaluation import HeldoutEvaluator
from lopt.meta.normalizer import LossNormalizer
from lopt.meta.problem import make_problem, with_normalizers
from lopt.meta.program_cache import ProgramCache
from lopt.meta.structure_fit_cache import StructureFitCache
from lopt.meta.structure_normalizer import (
    extrapolate,
    fit_structure,
    initial_losses,
    relative_gap,
)
from lopt.meta.trace_gate import tracing
from lopt.meta.truncation import TruncationSchedule
from lopt.tasks import TaskConfig, build, stack
from lopt.tasks.mixture import Mixture, base_family

__all__ = ["MixtureEngine"]

_HELDOUT_STREAM = 7_000_001
_DRAW_STREAM = 7_000_003

_LOG = logging.getLogger("lopt.meta")


def _draw_key(seed: int, bucket: int, redraw: int) -> int:
    return int(np.random.default_rng([seed, _DRAW_STREAM, bucket, redraw + 1]).integers(2**31))


def _estimate(estimator, theta, state, key):
    return estimator.estimate(theta, state, key=key)


def _init(estimator, theta, key):
    return estimator.init(theta, key=key)


def _flop_note(jaxpr: Any) -> dict[str, Any]:
    """A bucket program's FLOP count for the program cache's record (read by ``program_flops``)."""
    count = jaxpr_flops(jaxpr)
    return {"flops": {"flops": count.flops, "unbounded_loops": count.unbounded_loops, "opaque": list(count.opaque)}}


def _estimate_leaves(estimator, theta, state, key):
    """:func:`_estimate` with the gradient and the new state as leaf lists (exportable outputs)."""
    grad, new_state, metrics = _estimate(estimator, theta, state, key)
    return jax.tree.leaves(grad), jax.tree.leaves(new_state), metrics


class _BucketProgram:
    """A cached bucket program called like the traced one: ``(grad, new_state, metrics)``."""

    def __init__(self, program: Any, theta: Any, state: Any):
        self.program = program
        self._theta_tree, self._state_tree = jax.tree.structure(theta), jax.tree.structure(state)

    def __call__(self, estimator: Any, theta: Any, state: Any, key: Any) -> tuple[Any, Any, dict]:
        grad, new_state, metrics = self.program(estimator, theta, state, key)
        return jax.tree.unflatten(self._theta_tree, grad), jax.tree.unflatten(self._state_tree, new_state), metrics

    def cost_analysis(self) -> Any:
        return self.program.cost_analysis()


def _in_background(slots: threading.BoundedSemaphore, fn, *args) -> concurrent.futures.Future:
    """``fn(*args)`` in a daemon thread that waits for one of ``slots``; its future.

    Daemon threads, unlike a ``ThreadPoolExecutor``'s, do not hold the process at exit: Ctrl-C
    during the set-up ends it at once instead of after every program has compiled.
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run():
        with slots:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(err)

    threading.Thread(target=run, name="lopt-compile", daemon=True).start()
    return future


def _signature(tree: Any) -> tuple:
    """What a compiled program is specialised on: tree structure, shapes, dtypes, weak types."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), x.dtype, bool(getattr(x, "weak_type", False))) for x in leaves)


@dataclasses.dataclass
class _Bucket:
    structure: TaskConfig
    family: str
    heldout: list
    halves: list  # two lists of configs
    gap: float = 0.1


class MixtureEngine:
    """Runs ``B`` bucket estimators per outer step over a :class:`~lopt.tasks.Mixture`.

    Args:
        lopt_: the learned optimizer.
        dist: the mixture the structures come from (used to draw variants).
        structures: one representative config per training bucket.
        heldout_structures: structures used only for validation (e.g. held-out families).
        truncation: the horizon schedule.
        num_tasks: antithetic PES pairs per bucket.
        std: PES perturbation standard deviation.
        unroll_length: inner steps per truncation.
        objective: ``"train"`` or ``"valid"``.
        configs_per_bucket: configs per pool half.
        redraw_every: outer steps between re-draws of a half (0: never re-draw).
        heldout_per_bucket: held-out variants per structure.
        eval_steps: inner steps of a held-out run.
        normalizer_steps: Adam steps of the per-structure normaliser fit.
        seed: seeds every draw.
        heldout_seed: seeds the held-out variants (``None``: ``seed``). A campaign fixes it so every
            session validates on the same configs and never trains on them.
        bucket_weighting: ``"mean"`` averages the buckets' meta-gradients; ``"unit"`` scales each
            to unit norm first, so every structure gets an equal vote on the direction (one
            structure with large, noisy gradients, e.g. a normaliser that under-estimates its
            best loss, cannot pull the shared step); ``"pcgrad"`` also removes from each the
            components that conflict with another structure's (gradient surgery), so a step is
            only taken where no structure's gradient opposes it to first order.
        mesh: optional ``jax.sharding.Mesh`` with one axis; shards each bucket's tasks over it.
        trainable: perturb only theta's leaves whose names match this pattern
            (:mod:`lopt.meta.trainable`; ``""``: all).
        fit_cache: a :class:`~lopt.meta.structure_fit_cache.StructureFitCache` that keeps the
            per-structure normaliser fits (training pools and held-out pools) on disk, so a run
            with the same configs fits none again; ``None`` fits every time.
        compile_ahead: start compiling the bucket programs in background threads during the
            set-up (a training run needs them next). ``False`` for an engine that is only used
            to :meth:`evaluate` (validation): no CPU spent on programs it never runs, and no
            compile thread still inside XLA when the process exits (Python 3.11 ends such a
            daemon thread with a forced unwind that XLA's C++ frames turn into an abort, exit
            status 134, after the results were printed).
        bucket_ids: each structure's bucket number in the whole run, which seeds its variant
            draws (default ``0..B-1``). An engine over a subset of a run's structures (the
            set-up workers of :mod:`lopt.meta.prewarm`) passes their numbers in the full run, so
            it draws, fits and compiles exactly what the full run's engine does for them.

    Example:
        >>> import jax, lopt
        >>> from lopt.meta.truncation import ConstantHorizon
        >>> dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=2, augmentation=None)
        >>> engine = MixtureEngine(lopt.learned.get("learnable_adam"), dist, dist.structures()[:2],
        ...     truncation=ConstantHorizon(20), num_tasks=2, unroll_length=10, configs_per_bucket=2,
        ...     redraw_every=2, heldout_per_bucket=1, eval_steps=20, normalizer_steps=20)
        >>> theta = engine.lopt.init(jax.random.key(0))
        >>> states = engine.init(theta, key=jax.random.key(1))
        >>> grad, states, metrics = engine.estimate(theta, states, key=jax.random.key(2))
        >>> int(metrics["buckets"])
        2
    """

    def __init__(self, lopt_: LearnedOptimizer, dist: Mixture, structures: Sequence[Any], *,
                 heldout_structures: Sequence[Any] = (), truncation: TruncationSchedule, num_tasks: int = 16,
                 std: float = 0.01, unroll_length: int = 50, objective: str = "train",
                 configs_per_bucket: int = 8, redraw_every: int = 100, heldout_per_bucket: int = 2,
                 eval_steps: int = 1000, normalizer_steps: int = 1000, seed: int = 0,
                 heldout_seed: int | None = None, bucket_weighting: str = "mean", mesh: Any = None,
                 episode_weighting: str = "uniform", fit_cache: StructureFitCache | None = None,
                 trainable: str = "", compile_ahead: bool = True, program_cache: ProgramCache | None = None,
                 bucket_ids: Sequence[int] | None = None):
        if not structures:
            raise ValueError("MixtureEngine: pass at least one training structure.")
        bucket_ids = list(range(len(structures))) if bucket_ids is None else list(bucket_ids)
        if len(bucket_ids) != len(structures) or len(set(bucket_ids)) != len(bucket_ids) or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in bucket_ids):
            raise ValueError(f"MixtureEngine: bucket_ids={bucket_ids!r} must be {len(structures)} distinct "
                             "non-negative integers, one per structure.")
        if bucket_weighting not in BUCKET_WEIGHTINGS:
            raise ValueError(f"MixtureEngine: bucket_weighting={bucket_weighting!r}; choose one of {BUCKET_WEIGHTINGS}.")
        for name, value in (("num_tasks", num_tasks), ("configs_per_bucket", configs_per_bucket),
                            ("eval_steps", eval_steps), ("normalizer_steps", normalizer_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MixtureEngine: {name}={value!r} must be a positive integer.")
        if redraw_every and redraw_every * unroll_length < truncation.max_horizon:
            raise ValueError(
                f"MixtureEngine: redraw_every={redraw_every} outer steps x unroll_length={unroll_length} is "
                f"shorter than the longest horizon {truncation.max_horizon}; episodes would still run on a "
                f"half that is being replaced. Use redraw_every >= "
                f"{-(-truncation.max_horizon // unroll_length)} (or 0 to never re-draw).")
        if mesh is not None and num_tasks % mesh.size:
            raise ValueError(f"MixtureEngine: num_tasks={num_tasks} must be a multiple of the {mesh.size} devices "
                             "of the mesh (each device trains an equal share of the tasks).")
        self.lopt, self.dist, self.truncation = lopt_, dist, truncation
        self.num_tasks, self.std, self.unroll_length, self.objective = num_tasks, std, unroll_length, objective
        self.configs_per_bucket, self.redraw_every = configs_per_bucket, redraw_every
        self.heldout_per_bucket, self.eval_steps, self.normalizer_steps = heldout_per_bucket, eval_steps, normalizer_steps
        self.seed, self.mesh, self.fit_cache = seed, mesh, fit_cache
        self.program_cache = program_cache if mesh is None else None  # exported programs: one device
        self.heldout_seed = seed if heldout_seed is None else heldout_seed
        self.bucket_weighting, self.episode_weighting = bucket_weighting, episode_weighting
        self.trainable = trainable
        self.redraw_index = 0
        self.bucket_ids = bucket_ids
        self.buckets = [self._make_bucket(i, TaskConfig(s)) for i, s in zip(bucket_ids, structures)]
        self.heldout_only = [TaskConfig(s) for s in heldout_structures]
        self._estimators: list = []
        self._compiled: list = []
        self._evaluator: HeldoutEvaluator | None = None
        self.heldout_fits_from_cache = 0
        self.prewarm_report = None  # set by lopt.meta.trainer when set-up workers ran (lopt.meta.prewarm)
        self._ahead: tuple | None = None
        # The bucket programs take the normalisers as arrays: they compile in background threads
        # while the normalisers are fitted, on pools that hold placeholders until then.
        # Host work runs before the compile threads start: under 16 tracing threads the main thread
        # gets a small share of the GIL (a warm H200 set-up spent 25 s reading 16 cached fits after
        # them, a cold one 34 s building the pools to fit). The pools to fit are stacked from the
        # tasks the placeholder pools are built from.
        cached = self._cached_first_fits()
        self._fit_pools: dict[int, Any] = {}
        self._apply_pools(placeholders=True, fit_pools_for={i for i, fits in enumerate(cached) if fits is None})
        if compile_ahead:
            self._compile_ahead()
        self._fit_first_halves(cached)
        self._apply_normalizers()

    # --- drawing ---------------------------------------------------------------------------

    def _make_bucket(self, index: int, structure: TaskConfig) -> _Bucket:
        heldout: list = []
        if self.heldout_per_bucket:
            key = int(np.random.default_rng([self.heldout_seed, _HELDOUT_STREAM, index]).integers(2**31))
            heldout = self.dist.variants(structure, key, self.heldout_per_bucket)
        bucket = _Bucket(structure, base_family(structure), heldout, [[], []])
        self._fill(bucket, index, 0)
        return bucket

    def _fill(self, bucket: _Bucket, index: int, redraw: int) -> None:
        """The pool after re-draw ``redraw``: half ``r % 2`` holds draw ``r``, the other half draw ``r - 1``."""
        bucket.halves[redraw % 2] = self._draw(bucket, index, redraw)
        bucket.halves[(redraw - 1) % 2] = self._draw(bucket, index, redraw - 1)

    def _draw(self, bucket: _Bucket, index: int, redraw: int) -> list:
        """``configs_per_bucket`` training variants of the bucket's structure, never a held-out one."""
        want = self.configs_per_bucket
        held = set(bucket.heldout)
        candidates = self.dist.variants(bucket.structure, _draw_key(self.seed, index, redraw), want + len(held))
        chosen = [c for c in candidates if c not in held][:want]
        while len(chosen) < want:  # a structure with few variants: repeat (still never held-out ones)
            chosen.append(chosen[len(chosen) % max(len(chosen), 1)] if chosen else bucket.structure)
        return chosen

    def training_configs(self) -> list[list]:
        """The configs each bucket's new episodes currently draw from."""
        return [b.halves[self._active_half()] for b in self.buckets]

    def heldout_configs(self) -> list:
        """Every held-out config (variants of the training structures, then held-out structures)."""
        return [c for b in self.buckets for c in b.heldout] + list(self.heldout_only)

    def _active_half(self, redraw: int | None = None) -> int:
        r = self.redraw_index if redraw is None else redraw
        return r % 2

    # --- normalisers and problems ------------------------------------------------------------

    def _cached_first_fits(self) -> list:
        """The first halves' fits found in :attr:`fit_cache` (``None`` for each one missing)."""
        start = time.perf_counter()
        results = [self._cached_fits(b.halves[0], self.normalizer_steps) for b in self.buckets]
        self._fit_lookup_seconds = time.perf_counter() - start
        return results

    def _fit_first_halves(self, cached: list) -> None:
        """One vectorised Adam-grid program per structure, compiled in parallel threads, for each
        structure whose fits ``cached`` lacks."""
        # Tasks are built here, in one thread: datasets are loaded once and shared by every task
        # of a structure (stacking needs the very same arrays); only compilation runs in threads.
        start = time.perf_counter()
        results = list(cached)
        misses = [i for i, fits in enumerate(results) if fits is None]
        pools, self._fit_pools = self._fit_pools, {}
        for i in misses:
            if i not in pools:
                pools[i] = stack([build(c) for c in self.buckets[i].halves[0]])
        built = time.perf_counter()

        def fit(index: int) -> list[LossNormalizer]:
            return self._fit(self.buckets[index].halves[0], pools[index], self.normalizer_steps)

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, max(1, len(misses)))) as pool:
            for index, fits in zip(misses, pool.map(fit, misses)):
                results[index] = fits
        self._first_fits, self.fits_from_cache = results, len(results) - len(misses)
        _LOG.info("normalisers: %d of %d structures from the cache (read in %.1f s); built %d pools in %.1f s, "
                  "fitted them in %.1f s", self.fits_from_cache, len(results), self._fit_lookup_seconds, len(pools),
                  built - start, time.perf_counter() - built)
        for bucket, fits in zip(self.buckets, results):
            bucket.gap = max(relative_gap(fits), 1e-3)

    def _cached_fits(self, configs: list, num_steps: int) -> list[LossNormalizer] | None:
        return None if self.fit_cache is None else self.fit_cache.lookup(configs, num_steps=num_steps)

    def _fit(self, configs: list, pool: Any, num_steps: int) -> list[LossNormalizer]:
        """:func:`fit_structure` of ``pool`` (built from ``configs``), kept in :attr:`fit_cache`;
        where its time went is logged."""
        seconds: dict[str, float] = {}
        fits = fit_structure(pool, num_steps=num_steps, programs=self.program_cache, seconds=seconds)
        _LOG.info("fitted %s (%d configs, %d steps): %s", base_family(configs[0]), len(configs), num_steps,
                  ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        if self.fit_cache is not None:
            self.fit_cache.store(configs, fits, num_steps=num_steps)
        return fits

    def _normalizers(self, index: int, configs: list, redraw: int) -> list[LossNormalizer]:
        if redraw <= 0:
            # Draw -1 fills the inactive half before the first re-draw only to give the pool its static
            # shape: episodes draw active configs only, and re-draw 1 replaces the half before any
            # episode could use it. It takes the first fits as placeholders instead of an initial-loss
            # program of its own (one compile per structure, one after another: ~25 s of a cold GPU set-up).
            return self._first_fits[index]
        bucket = self.buckets[index]
        return extrapolate(initial_losses(stack([build(c) for c in configs])), bucket.gap)

    def _pool_normalizers(self, index: int) -> list[LossNormalizer]:
        bucket = self.buckets[index]
        r = self.redraw_index
        draws = {r % 2: r, (r - 1) % 2: r - 1}  # half -> the redraw that filled it
        return (self._normalizers(index, bucket.halves[0], draws[0])
                + self._normalizers(index, bucket.halves[1], draws[1]))

    def _pool_problem(self, index: int, *, placeholders: bool = False, keep_fit_pool: bool = False):
        bucket = self.buckets[index]
        configs = bucket.halves[0] + bucket.halves[1]
        normalizers = None if placeholders else self._pool_normalizers(index)
        if keep_fit_pool:  # the first half stacked on its own, for fit_structure
            configs = [build(c) for c in configs]
            self._fit_pools[index] = stack(configs[:len(bucket.halves[0])])
        problem = make_problem(self.lopt, configs, truncation=self.truncation, unroll_length=self.unroll_length,
                               objective=self.objective, normalizers=normalizers,
                               episode_weighting=self.episode_weighting)
        active = np.zeros(len(configs), bool)
        c = self.configs_per_bucket
        active[self._active_half() * c:(self._active_half() + 1) * c] = True
        return dataclasses.replace(problem, active=to_device(active))

    def _apply_pools(self, *, placeholders: bool = False, fit_pools_for: set[int] = frozenset()) -> None:
        problems = [self._pool_problem(i, placeholders=placeholders, keep_fit_pool=i in fit_pools_for)
                    for i in range(len(self.buckets))]
        estimators = [PES(p, num_tasks=self.num_tasks, std=self.std, trainable=self.trainable) for p in problems]
        if placeholders:  # only compiled from, never run: placed once the normalisers are in
            self._estimators = estimators
        else:
            self._set_estimators(estimators)

    def _apply_normalizers(self) -> None:
        """Puts the fitted normalisers in place of the set-up's placeholders (the pools stay)."""
        self._set_estimators([dataclasses.replace(e, problem=with_normalizers(e.problem, self._pool_normalizers(i)))
                              for i, e in enumerate(self._estimators)])

    def _set_estimators(self, estimators: list) -> None:
        self._estimators = estimators
        self._placed = [self._replicate(e) for e in estimators]  # on the mesh once per re-draw

    def set_step(self, step: int) -> bool:
        """Brings the pools to where they are at outer step ``step``; returns whether they changed."""
        target = step // self.redraw_every if self.redraw_every else 0
        if target == self.redraw_index:
            return False
        for index, bucket in zip(self.bucket_ids, self.buckets):
            self._fill(bucket, index, target)
        self.redraw_index = target
        self._apply_pools()
        return True

    # --- sharding ------------------------------------------------------------------------------

    def _shard_state(self, state: Any) -> Any:
        return distributed.shard_tasks(state, self.mesh, self.num_tasks)

    def place(self, states: tuple) -> tuple:
        """Puts bucket states on the engine's devices (the task axis sharded over the mesh)."""
        return tuple(self._shard_state(s) for s in states)

    def family_means(self, per_bucket: Any) -> dict[str, float]:
        """Mean of a per-bucket value (e.g. meta-loss) over the buckets of each family."""
        values = np.asarray(per_bucket, np.float64)
        groups: dict[str, list[float]] = {}
        for bucket, value in zip(self.buckets, values):
            groups.setdefault(bucket.family, []).append(float(value))
        return {family: float(np.mean(v)) for family, v in sorted(groups.items())}

    def _replicate(self, tree: Any) -> Any:
        return distributed.replicate(tree, self.mesh)

    # --- the estimator protocol ---------------------------------------------------------------

    def init(self, theta: Any, *, key: jax.Array) -> tuple:
        """Every bucket's PES state (``B`` pytrees)."""
        keys = jax.random.split(key, len(self._estimators))
        return tuple(self._shard_state(jax.jit(_init)(e, theta, k)) for e, k in zip(self._estimators, keys))

    def _compile_bucket(self, index: int, estimator: Any, theta: Any, state: Any, key: Any, start: float):
        """Traces, lowers and compiles one bucket's program (``theta`` and ``state`` may be shapes).

        With a :attr:`program_cache` the program comes from its exported module (traced only on a
        miss); its jaxpr is then not at hand (:meth:`program_flops` counts from the cache's record).
        """
        family = self.buckets[index].family
        t0 = time.perf_counter()
        if self.program_cache is not None:
            program = self.program_cache.compile(_estimate_leaves, (estimator, theta, state, key),
                                                 name=f"bucket-{family}", describe=_flop_note)
            compiled, jaxpr = _BucketProgram(program, theta, state), None
            how = "{}; waited {:.1f} s to trace, module {:.1f} s, lowered {:.1f} s".format(
                program.origin, program.seconds["gate"], program.seconds["module"], program.seconds["lower"])
            t2 = time.perf_counter()
            t1 = t2 - program.seconds["compile"]
        else:
            with tracing():  # Python work under the GIL: a few threads at a time (lopt.meta.trace_gate)
                traced = jax.jit(_estimate).trace(estimator, theta, state, key)
                lowered = traced.lower()
                t1 = time.perf_counter()
            compiled, jaxpr, how = lowered.compile(), traced.jaxpr, "traced"
            t2 = time.perf_counter()
        _LOG.info("compiled bucket %d (%s, %s): lowered after %.1f s, compile %.1f s, %.0f s since the start",
                  self.bucket_ids[index], family, how, t1 - t0, t2 - t1, t2 - start)
        return compiled, (t1 - t0, t2 - t1), jaxpr

    def _compile_ahead(self) -> None:
        """Starts compiling every bucket's program in background threads, from the shapes of theta
        and of the bucket states (single device; a mesh's shardings are known once placed)."""
        if self.mesh is not None:
            return
        key = jax.random.key(0)
        theta = jax.eval_shape(self.lopt.init, key)
        states = tuple(jax.eval_shape(_init, e, theta, key) for e in self._estimators)
        self._ahead = (_signature((theta, states, key)), self._start_compiles(self._estimators, theta, states, key))

    def wait_for_programs(self) -> None:
        """Blocks until the programs the set-up started compiling are ready (none started: returns).

        Raises:
            Exception: the first compile's error, if one failed.
        """
        if self._ahead is not None:
            for future in self._ahead[1]:
                future.result()

    def _start_compiles(self, estimators: list, theta: Any, states: Sequence, key: Any) -> list:
        """One future per bucket program, compiling in daemon threads (at most 16 at once)."""
        start, slots = time.perf_counter(), threading.BoundedSemaphore(16)
        return [_in_background(slots, self._compile_bucket, i, e, theta, s, key, start)
                for i, (e, s) in enumerate(zip(estimators, states))]

    def compile(self, theta: Any, states: tuple, *, key: jax.Array) -> float:
        """Compiles every bucket's estimate program in parallel threads; returns seconds taken.

        On one device the programs started compiling during the set-up (from the shapes of theta
        and of the states, while the normalisers were fitted): then this waits for them, and the
        seconds returned are only the wait. Programs started for other shapes are not used.

        Each program's lowering and compile seconds are logged (logger ``lopt.meta``) as it
        finishes and kept in :attr:`compile_seconds` (one ``(lower_s, compile_s)`` per bucket; with a
        :attr:`program_cache` the first holds the wait for the trace gate, the module's export or
        read and its lowering, each also logged);
        each program's traced jaxpr is kept in :attr:`program_jaxprs` (``None`` for a program from
        the program cache; :meth:`program_flops` counts either).
        """
        start = time.perf_counter()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == _signature((theta, tuple(states), key)):
            futures = ahead[1]
        else:
            futures = self._start_compiles(self._placed, self._replicate(theta), states, self._replicate(key))
        results = [future.result() for future in futures]
        self._compiled = [compiled for compiled, _, _ in results]
        self.compile_seconds = [seconds for _, seconds, _ in results]
        self.program_jaxprs = [jaxpr for _, _, jaxpr in results]
        return time.perf_counter() - start

    def program_flops(self) -> list[FlopCount]:
        """Each bucket program's FLOPs (:func:`lopt.flops.jaxpr_flops`, scan bodies times their lengths).

        From the jaxpr traced when it compiled, or for a program from the :attr:`program_cache`
        from its record (counted when it was exported).
        """
        if not self._compiled:
            raise ValueError("MixtureEngine.program_flops: compile the programs first (compile or estimate).")
        counts = []
        for compiled, jaxpr in zip(self._compiled, self.program_jaxprs):
            if jaxpr is not None:
                counts.append(jaxpr_flops(jaxpr))
            else:
                stored = compiled.program.record["flops"]
                counts.append(FlopCount(stored["flops"], stored["unbounded_loops"], tuple(stored["opaque"])))
        return counts

    def estimate(self, theta: Any, states: tuple, *, key: jax.Array) -> tuple[Any, tuple, dict]:
        """Runs every bucket with ``theta``; returns the mean gradient, new states, device metrics."""
        if len(states) != len(self._estimators):
            raise ValueError(f"MixtureEngine.estimate: {len(states)} states for {len(self._estimators)} buckets.")
        if not self._compiled:
            self.compile(theta, states, key=key)
        theta = self._replicate(theta)
        keys = jax.random.split(self._replicate(key), len(states))
        grads, new_states, metrics = [], [], []
        for compiled, estimator, state, k in zip(self._compiled, self._placed, states, keys):
            g, s, m = compiled(estimator, theta, state, k)
            grads.append(g)
            new_states.append(s)
            metrics.append(m)
        grad, summary = combine(grads, metrics, weighting=self.bucket_weighting)
        return grad, tuple(new_states), summary

    # --- held-out validation ----------------------------------------------------------------

    def heldout_pools(self) -> list[tuple[str, list]]:
        """``(family, configs)`` per held-out structure (one compiled evaluation program each)."""
        pools = [(b.family, b.heldout) for b in self.buckets if b.heldout]
        pools += [(base_family(s), self.dist.variants(s, _draw_key(self.heldout_seed, 10_000 + i, 0),
                                                      max(self.heldout_per_bucket, 1)))
                  for i, s in enumerate(self.heldout_only)]
        return pools

    def heldout_evaluator(self) -> HeldoutEvaluator:
        """The evaluator of :meth:`heldout_pools` (built on first use; fits read from :attr:`fit_cache`,
        counted in :attr:`heldout_fits_from_cache` once its pools are fitted)."""
        if self._evaluator is None:
            lock = threading.Lock()

            def fit(configs: list, pool: Any, num_steps: int) -> list[LossNormalizer]:
                cached = self._cached_fits(configs, num_steps)
                if cached:
                    with lock:
                        self.heldout_fits_from_cache += 1
                return cached or self._fit(configs, pool, num_steps)

            self._evaluator = HeldoutEvaluator(self.lopt, self.heldout_pools(), eval_steps=self.eval_steps, fit=fit,
                                               program_cache=self.program_cache)
        return self._evaluator

    def evaluate(self, theta: Any, *, key: jax.Array) -> dict[str, float]:
        """Trains every held-out config for ``eval_steps`` with theta; normalised final losses.

        Configs where no Adam run of the normaliser's grid lowered the loss by 1% are run but left
        out of the means (:func:`lopt.meta.structure_normalizer.informative`: their normalised loss
        is noise); a structure with none left is left out of the overall mean.

        Returns:
            What :meth:`lopt.meta.heldout_evaluation.HeldoutEvaluator.evaluate` returns:
            ``heldout_normalized_loss`` (mean over structures), ``heldout/<family>`` and
            ``heldout_structure/<key>`` means, ``heldout_diverged``, ``heldout_configs`` and
            ``heldout_uninformative``.
        """
        return self.heldout_evaluator().evaluate(theta, key=key)
