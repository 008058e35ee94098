"""The meta-trainer: outer loop, evaluation, metrics, checkpoints and exact resumption.

Every outer step's randomness is ``fold_in(root_key, step)``; together with the checkpointed
theta, outer-optimizer state and estimator state (params, optimizer states, episode keys and
PES accumulators of every inner training) this makes a resumed run continue the *same*
trajectory as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import lopt
from lopt.learned.serialization import save_theta
from lopt.meta import distributed
from lopt.meta.bucket_gradients import outer_update
from lopt.meta.checkpoints import CheckpointManager
from lopt.meta.config import MetaTrainConfig, OuterSection
from lopt.meta.config_checks import validate_config
from lopt.meta.estimators import ESTIMATORS, FullHorizonES
from lopt.meta.interrupts import GracefulStop, TrainingInterrupted, how_to_continue
from lopt.meta.metrics_log import MetricsLog, read_metrics
from lopt.meta.mixture_engine import MixtureEngine
from lopt.meta.normalizer import LossNormalizer, NormalizerCache, normalize_loss
from lopt.meta.outer import learned_outer_optimizer
from lopt.meta.prewarm import load_datasets_beside, prewarm
from lopt.meta.problem import make_problem
from lopt.meta.program_cache import ProgramCache
from lopt.meta.program_cache import available as program_cache_available
from lopt.meta.run_directory import open_run
from lopt.meta.structure_fit_cache import StructureFitCache
from lopt.meta.trainable import freeze_except, trainable_mask
from lopt.meta.truncation import make_schedule
from lopt.meta.warm_start import load_warm_start, save_warm_start
from lopt.tasks.mixture import NOT_IN_TASKSET

__all__ = ["MetaTrainer", "TrainingSetup", "bucket_engine", "build_setup", "mixture_engine_settings"]

EVAL_STREAM = 1_000_003  # fold_in offsets of evaluation and initialisation keys (disjoint from steps)
INIT_STREAM = 2**31 - 1
_LOG = logging.getLogger("lopt.meta")


@dataclasses.dataclass
class TrainingSetup:
    """Everything built from a config: the learned optimizer, task buckets, estimators.

    Attributes:
        task_configs: the configs of the first bucket (the one evaluated and reported on).
        buckets: every bucket's configs (one structure, one compiled program each).
        estimator: the estimator of a single-family run (a mixture's first bucket's, for reports).
        engine: the :class:`~lopt.meta.MixtureEngine` of a mixture run (``None`` otherwise).
    """

    config: MetaTrainConfig
    lopt: Any
    task_configs: list
    normalizers: list
    estimator: Any
    outer: optax.GradientTransformation
    buckets: list = dataclasses.field(default_factory=list)
    engine: MixtureEngine | None = None


def _mixture_distributions(cfg: MetaTrainConfig) -> tuple[Any, Any]:
    """A mixture run's training distribution and its held-out families' (``None`` without)."""
    task = cfg.task  # its values are checked by validate_config
    held = list(task.heldout_families)
    if set(task.mixture) == {"taskset"}:
        families = [f for f in lopt.tasks.names() if f not in NOT_IN_TASKSET]
        unknown = [f for f in held if f not in families]
        if unknown:
            raise ValueError(f"task.heldout_families: {unknown} are not taskset families; choose from {families}.")
        dist = lopt.tasks.taskset([f for f in families if f not in held], seed=cfg.seed)
        held_dist = lopt.tasks.taskset(held, seed=cfg.seed) if held else None
    else:
        weights = {k: v for k, v in task.mixture.items() if k not in held}
        if not weights:
            raise ValueError("task.heldout_families leaves no family to train on.")
        dist = lopt.tasks.mixture(weights, seed=cfg.seed)
        held_dist = lopt.tasks.mixture({f: 1.0 for f in held}, seed=cfg.seed) if held else None
    return dist, held_dist


def _mixture_structures(cfg: MetaTrainConfig) -> tuple[Any, list, list]:
    """A mixture run's distribution, training structures and held-out structures."""
    task, held = cfg.task, list(cfg.task.heldout_families)
    dist, held_dist = _mixture_distributions(cfg)
    if task.structures:
        structures = [lopt.tasks.TaskConfig(s) for s in task.structures]
    else:
        structures = [bucket[0] for bucket in dist.buckets(cfg.seed, task.num_buckets, 1)]
    heldout_structures = [b[0] for b in held_dist.buckets(cfg.seed, max(1, len(held)), 1)] if held_dist else []
    return dist, structures, heldout_structures


def mixture_engine_settings(cfg: MetaTrainConfig, truncation: Any, mesh: Any = None) -> dict[str, Any]:
    """The :class:`MixtureEngine` arguments a config decides (all but the structures and the mode)."""
    task, est = cfg.task, cfg.estimator
    eval_steps = cfg.trainer.eval_steps or min(truncation.max_horizon, 2000)
    program_cache = (ProgramCache(cfg.normalizer.cache_dir or None)
                     if cfg.trainer.program_cache and program_cache_available() else None)
    return {"truncation": truncation, "num_tasks": est.num_tasks, "std": est.std, "unroll_length": est.unroll_length,
            "objective": est.objective, "configs_per_bucket": task.configs_per_bucket,
            "redraw_every": task.redraw_every, "heldout_per_bucket": task.heldout_per_bucket,
            "eval_steps": eval_steps, "normalizer_steps": cfg.normalizer.num_steps or eval_steps,
            "seed": cfg.seed, "heldout_seed": None if task.heldout_seed < 0 else task.heldout_seed,
            "bucket_weighting": cfg.outer.bucket_weighting, "mesh": mesh, "episode_weighting": est.episode_weighting,
            "fit_cache": StructureFitCache(cfg.normalizer.cache_dir or None), "program_cache": program_cache,
            "trainable": cfg.outer.trainable}


def _mixture_engine(cfg: MetaTrainConfig, lopt_: Any, truncation: Any, *, compile_ahead: bool = True) -> MixtureEngine:
    """The engine of a mixture run: training structures, held-out families, devices
    (``compile_ahead=False``: an engine that only evaluates, see :class:`MixtureEngine`).

    A training engine's fits and programs missing from the caches are first made by set-up
    worker processes where the host has the cores (:mod:`lopt.meta.prewarm`), while this process
    loads the structures' datasets."""
    dist, structures, heldout_structures = _mixture_structures(cfg)
    # every device of every process; one process splits its tasks only where they divide evenly
    mesh = distributed.global_mesh("tasks") if jax.process_count() > 1 else distributed.local_task_mesh(cfg.estimator.num_tasks)
    settings = mixture_engine_settings(cfg, truncation, mesh)
    warmed = None
    if compile_ahead and mesh is None and settings["program_cache"] is not None:
        loading = load_datasets_beside([*structures, *heldout_structures])
        warmed = prewarm(cfg, structures)
        loading.join()
    start = time.perf_counter()
    engine = MixtureEngine(lopt_, dist, structures, heldout_structures=heldout_structures,
                           compile_ahead=compile_ahead, **settings)
    _LOG.info("engine: %d structures built in %.1f s", len(structures), time.perf_counter() - start)
    engine.prewarm_report = warmed
    return engine


def _device_notes(num_tasks: int, mesh: jax.sharding.Mesh | None) -> list[str]:
    """What the run does with this process's devices, when it has several."""
    count = jax.local_device_count()
    if count == 1 or jax.process_count() > 1:
        return []
    kind = jax.devices()[0].platform
    if mesh is not None:
        return [f"the {num_tasks} tasks are split over {mesh.size} {kind} devices"]
    return [(f"{count} {kind} devices, but estimator.num_tasks={num_tasks} does not split evenly over them: "
             f"running on one; use a multiple of {count}")]


def _outer_optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformationExtraArgs:
    """A baseline (``outer.optimizer="adam"``) or a learned optimizer (lopt.meta.outer) on theta."""
    outer_cfg = cfg.outer
    outer = learned_outer_optimizer(outer_cfg.optimizer, num_steps=cfg.trainer.outer_steps,
                                    learning_rate=outer_cfg.learning_rate,
                                    default_learning_rate=OuterSection.learning_rate)
    if outer is None:
        outer = lopt.optimizers.get(outer_cfg.optimizer, learning_rate=outer_cfg.learning_rate)
    if outer_cfg.clip_grad_norm > 0:
        outer = optax.chain(optax.clip_by_global_norm(outer_cfg.clip_grad_norm), outer)
    return freeze_except(outer, outer_cfg.trainable)


def _task_configs(cfg: MetaTrainConfig, notes: list[str]) -> list:
    family = lopt.tasks.get(cfg.task.family)
    base = dict(cfg.task.config)
    dataset = family.complete(base).get("dataset")
    fallback = cfg.task.fallback_dataset
    if dataset and fallback and dataset not in lopt.tasks.datasets.available():
        notes.append(f"dataset {dataset!r} is not installed; using {fallback!r} instead "
                     "(install Fashion-MNIST with `apt-get install dataset-fashion-mnist`).")
        base["dataset"] = fallback
    if not cfg.task.pool_seeds:
        return [family.complete(base)]
    return [family.complete({**family.sample(seed).to_dict(), **base}) for seed in cfg.task.pool_seeds]


def _learned_optimizer_and_truncation(cfg: MetaTrainConfig) -> tuple[Any, Any]:
    return (lopt.learned.get(cfg.lopt.name, **cfg.lopt.config),
            make_schedule(cfg.truncation.kind, horizon=cfg.truncation.horizon,
                          min_horizon=cfg.truncation.min_horizon, max_horizon=cfg.truncation.max_horizon))


def bucket_engine(cfg: MetaTrainConfig, structures: list, bucket_ids: list[int]) -> MixtureEngine:
    """A training engine over some of a mixture run's structures (``bucket_ids``: their numbers in
    the run), built as the run builds its own: it fits, caches and compiles what the run's engine
    would for them (:mod:`lopt.meta.prewarm`'s workers). Single device, no held-out structures."""
    lopt_, truncation = _learned_optimizer_and_truncation(cfg)
    dist, _ = _mixture_distributions(cfg)
    return MixtureEngine(lopt_, dist, [lopt.tasks.TaskConfig(s) for s in structures], bucket_ids=bucket_ids,
                         compile_ahead=True, **mixture_engine_settings(cfg, truncation))


def build_setup(cfg: MetaTrainConfig, *, progress: bool = True, notes: list[str] | None = None) -> TrainingSetup:
    """Builds the learned optimizer, the task pool with normalisers, the estimator and outer optimizer.

    Raises:
        ValueError: for any invalid setting (names the setting and the valid choices), first
            from :func:`lopt.meta.config_checks.validate_config`.
    """
    notes = [] if notes is None else notes
    validate_config(cfg)
    if distributed.initialize_from_env() is not None and not cfg.task.mixture:
        raise ValueError("a multi-process run (LOPT_COORDINATOR is set) shards a task mixture over the processes; "
                         "set task.mixture (e.g. task.mixture={\"taskset\": 1}) or unset LOPT_COORDINATOR.")
    lopt_, truncation = _learned_optimizer_and_truncation(cfg)
    trainable_mask(jax.eval_shape(lopt_.init, jax.random.key(0)), cfg.outer.trainable)  # a bad pattern fails here
    if cfg.task.mixture:  # every structure in every outer step (lopt.meta.mixture_engine)
        engine = _mixture_engine(cfg, lopt_, truncation)
        configs = engine.training_configs()
        return TrainingSetup(cfg, lopt_, list(configs[0]), list(engine._first_fits[0]), engine._estimators[0],
                             _outer_optimizer(cfg), buckets=configs, engine=engine)
    task_configs = _task_configs(cfg, notes)
    est = cfg.estimator
    if cfg.normalizer.enabled:
        steps = cfg.normalizer.num_steps or min(truncation.max_horizon, 10_000)
        cache = NormalizerCache(cfg.normalizer.cache_dir or None)
        normalizers = cache.get_many(task_configs, progress=progress, num_steps=steps,
                                     num_seeds=cfg.normalizer.num_seeds)
    else:
        normalizers = [LossNormalizer(1.0, 0.0)] * len(task_configs)
    problem = make_problem(lopt_, task_configs, truncation=truncation, unroll_length=est.unroll_length,
                           objective=est.objective, normalizers=normalizers,
                           episode_weighting=est.episode_weighting)
    if est.kind == "tbptt":
        estimator = ESTIMATORS["tbptt"](problem, num_tasks=est.num_tasks)
    elif est.kind == "full_es":
        estimator = FullHorizonES(problem, num_tasks=est.num_tasks, std=est.std,
                                  meta_loss=est.full_es_meta_loss, sign_only=est.sign_only,
                                  trainable=cfg.outer.trainable)
    else:
        estimator = ESTIMATORS[est.kind](problem, num_tasks=est.num_tasks, std=est.std,
                                         trainable=cfg.outer.trainable)
    return TrainingSetup(cfg, lopt_, list(task_configs), normalizers, estimator, _outer_optimizer(cfg),
                         buckets=[list(task_configs)])


def check_resumable(config: MetaTrainConfig, out_dir: str | os.PathLike) -> None:
    """Raises ``ValueError`` naming the fix when a run of ``config`` cannot be resumed exactly.

    A run with ``trainer.full_checkpoints=false`` keeps only its warm start, so it continues in
    a new run from that file (fresh inner tasks) instead.

    Example:
        >>> from lopt.meta.config import load_config
        >>> check_resumable(load_config("quickstart"), "runs/a")   # full checkpoints: fine
        >>> check_resumable(load_config("quickstart", ["trainer.full_checkpoints=false"]), "runs/a")
        Traceback (most recent call last):
        ...
        ValueError: resume: there is no inner-task state to continue exactly; continue with a new run with `--set trainer.init_from=runs/a/warm_start.safetensors` (fresh inner tasks: this run keeps no full checkpoints, trainer.full_checkpoints=false).
    """
    if not config.trainer.full_checkpoints:
        raise ValueError("resume: there is no inner-task state to continue exactly; continue with "
                         f"{how_to_continue(os.fspath(out_dir), full_checkpoints=False)}.")


def inner_steps_per_outer_step(setup: TrainingSetup) -> int:  # the same for every bucket
    """Inner steps one outer step trains (both antithetic members counted)."""
    est = setup.config.estimator
    members = 1 if est.kind == "tbptt" else 2
    if est.kind == "full_es":
        return members * est.num_tasks * setup.estimator.problem.truncation.max_horizon
    buckets = len(setup.engine.buckets) if setup.engine is not None else 1
    return buckets * members * est.num_tasks * est.unroll_length


class MetaTrainer:
    """Runs meta-training for a config into an output directory, resumably.

    Output directory layout: ``config.json``, ``metrics.jsonl`` (one line per outer step),
    ``eval.jsonl`` (periodic held-out evaluation), ``checkpoints/`` (full training state),
    ``theta.safetensors`` (the learned optimizer, loadable with ``lopt.learned.load_theta``).

    Example:
        >>> # cfg = lopt.meta.load_config("quickstart", ["trainer.outer_steps=20"])
        >>> # MetaTrainer(cfg, "runs/demo").run()
    """

    def __init__(self, config: MetaTrainConfig, out_dir: str | os.PathLike, *, progress: bool = True):
        self.config = config
        distributed.initialize_from_env()  # before any device is touched; a no-op for one process
        self.out_dir = distributed.process_out_dir(out_dir)  # process k > 0 writes into <out>.process-<k>
        self.progress = progress
        self.notes: list[str] = []
        self.setup = build_setup(config, progress=progress, notes=self.notes)
        trainer = config.trainer
        self.root_key = jax.random.key(config.seed)
        self.eval_steps = trainer.eval_steps or min(self.setup.estimator.problem.truncation.max_horizon, 2000)
        estimator, outer = self.setup.estimator, self.setup.outer

        def outer_step(estimator, theta, outer_state, est_state, key):
            grad, est_state, metrics = estimator.estimate(theta, est_state, key=key)
            theta, outer_state = outer_update(outer, theta, outer_state, grad, metrics["meta_loss"])
            return theta, outer_state, est_state, metrics

        self._outer_step = jax.jit(outer_step)
        self._apply_outer = jax.jit(lambda *args: outer_update(outer, *args))
        self.engine = self.setup.engine
        self._evaluate = jax.jit(self._evaluate_impl)
        # One structure, one process, several local devices (GPUs, or host devices on a CPU):
        # the task axis is split over them, the rest replicated; the ES sums become all-reduces.
        self._mesh = distributed.local_task_mesh(config.estimator.num_tasks) if self.engine is None else None
        self._estimator = distributed.replicate(estimator, self._mesh)
        self.notes.extend(_device_notes(config.estimator.num_tasks, self.engine.mesh if self.engine else self._mesh))

    # --- state -------------------------------------------------------------------------------

    def initial_state(self) -> dict:
        """Fresh theta, outer-optimizer state and estimator state (step 0)."""
        theta_key, est_key = jax.random.split(jax.random.fold_in(self.root_key, INIT_STREAM))
        theta = self.setup.lopt.init(theta_key)
        outer_state = self.setup.outer.init(theta)
        if self.config.trainer.init_from:  # warm start: theta (and outer state) from a file, fresh tasks
            theta, warm_outer, _ = load_warm_start(self.config.trainer.init_from, self.setup.lopt,
                                                   outer_like=outer_state)
            outer_state = warm_outer if warm_outer is not None else self.setup.outer.init(theta)
        if self.engine is not None:
            return {"theta": theta, "outer_state": outer_state, "estimator_state": self.engine.init(theta, key=est_key)}
        return self._place({"theta": theta, "outer_state": outer_state,
                            "estimator_state": self.setup.estimator.init(theta, key=est_key)})

    def _place(self, state: dict) -> dict:
        """A one-structure state on the trainer's devices: the task axis split over the local mesh."""
        if self._mesh is None:
            return state
        return {"theta": distributed.replicate(state["theta"], self._mesh),
                "outer_state": distributed.replicate(state["outer_state"], self._mesh),
                "estimator_state": distributed.shard_tasks(state["estimator_state"], self._mesh,
                                                           self.config.estimator.num_tasks)}

    # --- evaluation --------------------------------------------------------------------------

    def _evaluate_impl(self, problem, theta, key):
        steps = self.eval_steps
        tail = max(1, steps // 10)

        def one(index, k):
            task = problem.task(index)
            curves = lopt.inner.train(task, self.setup.lopt.optimizer(theta, num_steps=steps), key=k,
                                      num_steps=steps, eval_every=steps, eval_batches=4)
            final = jnp.nanmean(curves.train_loss[-tail:])
            normalized = normalize_loss(final, problem.initial_loss[index], problem.best_loss[index])
            return final, normalized, curves.valid_loss[-1], curves.diverged

        n = self.config.trainer.eval_tasks
        indices = jnp.arange(n) % problem.pool_size
        final, normalized, valid, diverged = jax.vmap(one)(indices, jax.random.split(key, n))
        return {"eval_train_loss": jnp.nanmean(final), "eval_normalized_loss": normalized.mean(),
                "eval_valid_loss": jnp.nanmean(valid), "eval_diverged": diverged.sum()}

    def evaluate(self, theta, step: int) -> dict:
        """Trains ``eval_tasks`` held-out inner runs with theta; mean final losses.

        Mixture runs evaluate every held-out config of every structure (see
        :meth:`lopt.meta.MixtureEngine.evaluate`).
        """
        key = jax.random.fold_in(jax.random.fold_in(self.root_key, EVAL_STREAM), step)
        if self.engine is not None:
            return self.engine.evaluate(theta, key=key)
        return {k: float(v) for k, v in self._evaluate(self._estimator.problem, theta, key).items()}

    def _evaluate_and_keep_best(self, theta, step: int, eval_log: MetricsLog, best: float) -> tuple[dict, float]:
        """Evaluates, logs, and writes ``theta_best.safetensors`` when the held-out score improved."""
        result = self.evaluate(theta, step)
        eval_log.write(step, result)
        score = _score(result)
        if score is not None and math.isfinite(score) and score < best:
            best = score
            save_theta(os.path.join(self.out_dir, "theta_best.safetensors"), self.setup.lopt, theta,
                       extra={"outer_steps": step, "heldout_score": score, "config": self.config.name})
        return result, best

    # --- the loop ----------------------------------------------------------------------------

    def run(self, *, resume: bool = False, stop_after: int | None = None, deadline: float | None = None) -> dict:
        """Meta-trains to ``trainer.outer_steps`` (from the latest checkpoint if ``resume``).

        Args:
            resume: continue from the newest usable checkpoint in ``out_dir/checkpoints``.
            stop_after: stop (after checkpointing) once this many outer steps are done in total;
                used to simulate interruptions.
            deadline: a ``time.time()`` by which to stop (after checkpointing), besides
                ``trainer.max_minutes``; unlike that budget it also counts what passes before the
                first outer step (waiting for compilation), which a caller with a fixed wall-clock
                allowance (a rented-GPU call) needs.

        Returns:
            A summary: final step, theta path, seconds, inner steps per second, last metrics.

        Raises:
            TrainingInterrupted: on Ctrl-C (``SIGINT``) or ``SIGTERM`` (when run in the main
                thread), after finishing the outer step in flight and checkpointing it; a second
                signal stops at once with ``KeyboardInterrupt``. ``resume=True`` continues exactly.
        """
        if resume:
            check_resumable(self.config, self.out_dir)
        run_dir = open_run(self.out_dir, self.config, resume=resume)  # refuses to clobber a run; locks; records config
        self.notes.extend(run_dir.notes)
        try:
            with GracefulStop() as stop:  # Ctrl-C / SIGTERM: finish the step in flight, checkpoint it, stop
                return self._train(resume, stop_after, stop, deadline)
        finally:
            run_dir.release()

    def _train(self, resume: bool, stop_after: int | None, stop: GracefulStop, deadline: float | None = None) -> dict:
        """The outer loop of :meth:`run` (the directory is open and locked)."""
        cfg = self.config
        manager = CheckpointManager(cfg.trainer.checkpoint_dir or os.path.join(self.out_dir, "checkpoints"),
                                    keep=cfg.trainer.keep_checkpoints)
        metrics_log = MetricsLog(os.path.join(self.out_dir, "metrics.jsonl"))
        eval_log = MetricsLog(os.path.join(self.out_dir, "eval.jsonl"))
        state, step = self.initial_state(), 0
        if resume and manager.latest_step() is not None:
            step, state, _ = manager.restore(like=state)
            if self.engine is None:
                state = self._place(state)
            metrics_log.truncate_after(step)
            eval_log.truncate_after(step)
        total = cfg.trainer.outer_steps if stop_after is None else min(stop_after, cfg.trainer.outer_steps)
        per_step = inner_steps_per_outer_step(self.setup)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.trainer.outer_steps, initial=step, unit="outer step", disable=not self.progress,
                   desc="meta-training (compiling)")
        theta, outer_state, est_state = state["theta"], state["outer_state"], state["estimator_state"]
        start, start_step, smoothed, last = time.perf_counter(), step, None, {}
        best = _best_heldout(eval_log)
        if self.engine is not None:
            self.engine.set_step(step)
            est_state = self.engine.place(est_state)
        pending = None  # mixture runs read an outer step's metrics after dispatching the next one

        def record(done: int, metrics: dict) -> None:
            nonlocal smoothed
            per_bucket = metrics.pop("meta_loss_per_bucket", None)
            metrics = {k: float(v) for k, v in metrics.items()}
            if per_bucket is not None:
                for family, value in self.engine.family_means(per_bucket).items():
                    metrics[f"meta_loss/{family}"] = value
            metrics.update(seconds=time.perf_counter() - start, inner_steps=done * per_step)
            metrics_log.write(done, metrics)
            meta_loss = metrics["meta_loss"]
            smoothed = meta_loss if smoothed is None or not math.isfinite(smoothed) else 0.95 * smoothed + 0.05 * meta_loss

        max_seconds = 60.0 * cfg.trainer.max_minutes if cfg.trainer.max_minutes > 0 else math.inf
        if deadline is not None:
            max_seconds = min(max_seconds, deadline - time.time() + (time.perf_counter() - start))
        while step < total:
            key = jax.random.fold_in(self.root_key, step)
            if self.engine is not None:  # every bucket, one averaged gradient
                self.engine.set_step(step)
                grad, est_state, metrics = self.engine.estimate(theta, est_state, key=key)
                theta, outer_state = self._apply_outer(theta, outer_state, grad, metrics["meta_loss"])
            else:
                theta, outer_state, est_state, metrics = self._outer_step(self._estimator, theta, outer_state,
                                                                          est_state, key)
            step += 1
            if pending is not None:
                record(*pending)
            pending = (step, metrics)
            if self.engine is None:
                record(*pending)
                pending = None
            postfix = {"meta_loss": f"{smoothed:.4f}" if smoothed is not None else "..."}
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                last, best = self._evaluate_and_keep_best(theta, step, eval_log, best)
                postfix["eval"] = f"{_score(last):.4f}"
            if step == start_step + 1:
                bar.set_description("meta-training")
            bar.set_postfix(postfix)
            bar.update(1)
            out_of_time = time.perf_counter() - start > max_seconds
            due = manager.should_save(step, every_steps=cfg.trainer.checkpoint_every,
                                      every_seconds=60 * cfg.trainer.checkpoint_minutes)
            # clock and signal decisions are the same on every process of a multi-process run
            due, out_of_time, signum = distributed.agree([due, out_of_time, stop.signal or 0])
            if due or step == total or out_of_time or signum:
                if pending is not None:
                    record(*pending)
                    pending = None
                if cfg.trainer.full_checkpoints:
                    manager.save(step, distributed.gather({"theta": theta, "outer_state": outer_state,
                                                           "estimator_state": est_state}),
                                 {"step": step, "config": cfg.name})
                else:
                    manager.mark_saved(step)
                save_warm_start(os.path.join(self.out_dir, "warm_start.safetensors"), self.setup.lopt, theta,
                                outer_state, extra={"outer_steps": step, "config": cfg.name})
                if cfg.trainer.theta_history:
                    os.makedirs(os.path.join(self.out_dir, "thetas"), exist_ok=True)
                    save_theta(os.path.join(self.out_dir, "thetas", f"theta-{step:06d}.safetensors"), self.setup.lopt,
                               theta, extra={"outer_steps": step, "config": cfg.name})
            if out_of_time:
                limit = f"trainer.max_minutes={cfg.trainer.max_minutes}" + (" or the deadline" if deadline else "")
                self.notes.append(f"stopped at its time limit ({limit}) at outer step {step}; "
                                  "continue with "
                                  f"{how_to_continue(str(self.out_dir), full_checkpoints=cfg.trainer.full_checkpoints)}")
                break
            if signum:
                bar.close()
                raise TrainingInterrupted(signum, step, self.out_dir, resumable=cfg.trainer.full_checkpoints)
        if pending is not None:
            record(*pending)
        if cfg.trainer.eval_every and step > start_step and step % cfg.trainer.eval_every:  # the final theta too
            last, best = self._evaluate_and_keep_best(theta, step, eval_log, best)
        bar.close()
        seconds = time.perf_counter() - start
        theta_path = save_theta(os.path.join(self.out_dir, "theta.safetensors"), self.setup.lopt, theta,
                                extra={"outer_steps": step, "config": cfg.name, "run_config": cfg.to_dict()})
        rows = read_metrics(os.path.join(self.out_dir, "metrics.jsonl"))
        done_here = step - start_step
        return {"step": step, "theta": theta, "theta_path": str(theta_path), "seconds": seconds,
                "inner_steps_per_s": done_here * per_step / seconds if done_here else float("nan"),
                "last_metrics": rows[-1] if rows else {}, "last_eval": last, "notes": self.notes}


def _score(row: dict) -> float | None:
    """An evaluation's score: a mixture's held-out normalised loss, else the pool evaluation's."""
    return row.get("heldout_normalized_loss", row.get("eval_normalized_loss"))


def _best_heldout(eval_log: MetricsLog) -> float:
    """The best held-out score logged so far (``inf`` when none): ``theta_best`` is only replaced by a better one."""
    best = math.inf
    for row in read_metrics(str(eval_log.path)) if eval_log.path.exists() else []:
        score = _score(row)
        if isinstance(score, (int, float)) and math.isfinite(score):
            best = min(best, float(score))
    return best
