"""The meta-trainer: outer loop, evaluation, metrics, checkpoints and exact resumption.

Every outer step's randomness is ``fold_in(root_key, step)``; together with the checkpointed
theta, outer-optimizer state and estimator state (params, optimizer states, episode keys and
PES accumulators of every inner training) this makes a resumed run continue the *same*
trajectory as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import lopt
from lopt.learned.serialization import save_theta
from lopt.meta.checkpoints import CheckpointManager
from lopt.meta.config import MetaTrainConfig
from lopt.meta.estimators import ESTIMATORS, FullHorizonES
from lopt.meta.metrics_log import MetricsLog, read_metrics
from lopt.meta.normalizer import LossNormalizer, NormalizerCache, normalize_loss
from lopt.meta.problem import make_problem
from lopt.meta.truncation import make_schedule

__all__ = ["MetaTrainer", "TrainingSetup", "build_setup"]

EVAL_STREAM = 1_000_003  # fold_in offsets of evaluation and initialisation keys (disjoint from steps)
INIT_STREAM = 2**31 - 1


@dataclasses.dataclass
class TrainingSetup:
    """Everything built from a config: the learned optimizer, task buckets, estimators.

    Attributes:
        task_configs: the configs of the first bucket (the one evaluated and reported on).
        buckets: every bucket's configs (one structure, one compiled program each).
        estimators: one estimator per bucket; ``estimator`` is the first.
    """

    config: MetaTrainConfig
    lopt: Any
    task_configs: list
    normalizers: list
    estimator: Any
    outer: optax.GradientTransformation
    buckets: list = dataclasses.field(default_factory=list)
    estimators: list = dataclasses.field(default_factory=list)


def _task_buckets(cfg: MetaTrainConfig, notes: list[str]) -> list[list]:
    """The task pools: one bucket for a single family, ``num_buckets`` for a mixture."""
    weights = cfg.task.mixture
    if not weights:
        return [_task_configs(cfg, notes)]
    for name in ("num_buckets", "configs_per_bucket"):
        if getattr(cfg.task, name) < 1:
            raise ValueError(f"task.{name}={getattr(cfg.task, name)} must be >= 1.")
    dist = lopt.tasks.taskset() if set(weights) == {"taskset"} else lopt.tasks.mixture(weights)
    return dist.buckets(cfg.seed, cfg.task.num_buckets, cfg.task.configs_per_bucket)


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


def build_setup(cfg: MetaTrainConfig, *, progress: bool = True, notes: list[str] | None = None) -> TrainingSetup:
    """Builds the learned optimizer, the task pool with normalisers, the estimator and outer optimizer.

    Raises:
        ValueError: for any invalid setting (names the setting and the valid choices).
    """
    notes = [] if notes is None else notes
    lopt_ = lopt.learned.get(cfg.lopt.name, **cfg.lopt.config)
    buckets = _task_buckets(cfg, notes)
    truncation = make_schedule(cfg.truncation.kind, horizon=cfg.truncation.horizon,
                               min_horizon=cfg.truncation.min_horizon, max_horizon=cfg.truncation.max_horizon)
    est = cfg.estimator
    if est.kind not in ESTIMATORS:
        raise ValueError(f"estimator.kind={est.kind!r} is unknown; use one of {sorted(ESTIMATORS)}.")
    estimators, all_normalizers = [], []
    for task_configs in buckets:
        if cfg.normalizer.enabled:
            steps = cfg.normalizer.num_steps or min(truncation.max_horizon, 10_000)
            cache = NormalizerCache(cfg.normalizer.cache_dir or None)
            normalizers = cache.get_many(task_configs, progress=progress, num_steps=steps,
                                         num_seeds=cfg.normalizer.num_seeds)
        else:
            normalizers = [LossNormalizer(1.0, 0.0)] * len(task_configs)
        problem = make_problem(lopt_, task_configs, truncation=truncation, unroll_length=est.unroll_length,
                               objective=est.objective, normalizers=normalizers)
        if est.kind == "tbptt":
            estimators.append(ESTIMATORS["tbptt"](problem, num_tasks=est.num_tasks))
        elif est.kind == "full_es":
            estimators.append(FullHorizonES(problem, num_tasks=est.num_tasks, std=est.std,
                                            meta_loss=est.full_es_meta_loss, sign_only=est.sign_only))
        else:
            estimators.append(ESTIMATORS[est.kind](problem, num_tasks=est.num_tasks, std=est.std))
        all_normalizers.append(normalizers)
    outer_cfg = cfg.outer
    outer = lopt.optimizers.get(outer_cfg.optimizer, learning_rate=outer_cfg.learning_rate)
    if outer_cfg.clip_grad_norm > 0:
        outer = optax.chain(optax.clip_by_global_norm(outer_cfg.clip_grad_norm), outer)
    return TrainingSetup(cfg, lopt_, list(buckets[0]), all_normalizers[0], estimators[0], outer,
                         buckets=[list(b) for b in buckets], estimators=estimators)


def inner_steps_per_outer_step(setup: TrainingSetup) -> int:  # the same for every bucket
    """Inner steps one outer step trains (both antithetic members counted)."""
    est = setup.config.estimator
    members = 1 if est.kind == "tbptt" else 2
    if est.kind == "full_es":
        return members * est.num_tasks * setup.estimator.problem.truncation.max_horizon
    return members * est.num_tasks * est.unroll_length


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
        self.out_dir = str(out_dir)
        self.progress = progress
        self.notes: list[str] = []
        self.setup = build_setup(config, progress=progress, notes=self.notes)
        trainer = config.trainer
        for name in ("outer_steps", "checkpoint_every", "keep_checkpoints", "eval_tasks"):
            if getattr(trainer, name) < 1:
                raise ValueError(f"trainer.{name}={getattr(trainer, name)} must be >= 1.")
        self.root_key = jax.random.key(config.seed)
        self.eval_steps = trainer.eval_steps or min(self.setup.estimator.problem.truncation.max_horizon, 2000)
        estimator, outer = self.setup.estimator, self.setup.outer

        def outer_step(estimator, theta, outer_state, est_state, key):
            grad, est_state, metrics = estimator.estimate(theta, est_state, key=key)
            updates, outer_state = outer.update(grad, outer_state, theta)
            theta = optax.apply_updates(theta, updates)
            return theta, outer_state, est_state, metrics

        self._outer_step = jax.jit(outer_step)  # compiles once per bucket (each a pytree structure)
        self._evaluate = jax.jit(self._evaluate_impl)
        self._estimator = estimator
        self._estimators = self.setup.estimators

    # --- state -------------------------------------------------------------------------------

    def initial_state(self) -> dict:
        """Fresh theta, outer-optimizer state and estimator state (step 0)."""
        theta_key, est_key = jax.random.split(jax.random.fold_in(self.root_key, INIT_STREAM))
        theta = self.setup.lopt.init(theta_key)
        states = tuple(est.init(theta, key=est_key if i == 0 else jax.random.fold_in(est_key, i))
                       for i, est in enumerate(self._estimators))
        return {"theta": theta, "outer_state": self.setup.outer.init(theta),
                "estimator_state": states[0] if len(states) == 1 else states}

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
        """Trains ``eval_tasks`` held-out inner runs with theta; mean final losses."""
        key = jax.random.fold_in(jax.random.fold_in(self.root_key, EVAL_STREAM), step)
        return {k: float(v) for k, v in self._evaluate(self._estimator.problem, theta, key).items()}

    # --- the loop ----------------------------------------------------------------------------

    def run(self, *, resume: bool = False, stop_after: int | None = None) -> dict:
        """Meta-trains to ``trainer.outer_steps`` (from the latest checkpoint if ``resume``).

        Args:
            resume: continue from the newest usable checkpoint in ``out_dir/checkpoints``.
            stop_after: stop (after checkpointing) once this many outer steps are done in total;
                used to simulate interruptions.

        Returns:
            A summary: final step, theta path, seconds, inner steps per second, last metrics.
        """
        cfg = self.config
        os.makedirs(self.out_dir, exist_ok=True)
        manager = CheckpointManager(os.path.join(self.out_dir, "checkpoints"), keep=cfg.trainer.keep_checkpoints)
        metrics_log = MetricsLog(os.path.join(self.out_dir, "metrics.jsonl"))
        eval_log = MetricsLog(os.path.join(self.out_dir, "eval.jsonl"))
        state, step = self.initial_state(), 0
        if resume and manager.latest_step() is not None:
            step, state, _ = manager.restore(like=state)
            metrics_log.truncate_after(step)
            eval_log.truncate_after(step)
        elif not resume:
            for log in (metrics_log, eval_log):
                if log.path.exists():
                    log.path.unlink()
            for old in manager.list():
                manager.path(old).unlink(missing_ok=True)
        with open(os.path.join(self.out_dir, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
        total = cfg.trainer.outer_steps if stop_after is None else min(stop_after, cfg.trainer.outer_steps)
        per_step = inner_steps_per_outer_step(self.setup)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.trainer.outer_steps, initial=step, unit="outer step", disable=not self.progress,
                   desc="meta-training (compiling)")
        theta, outer_state, est_state = state["theta"], state["outer_state"], state["estimator_state"]
        start, start_step, smoothed, last = time.perf_counter(), step, None, {}
        while step < total:
            key = jax.random.fold_in(self.root_key, step)
            if len(self._estimators) == 1:
                theta, outer_state, est_state, metrics = self._outer_step(self._estimator, theta, outer_state,
                                                                          est_state, key)
            else:  # a mixture: outer step s trains bucket s % B
                bucket = step % len(self._estimators)
                theta, outer_state, bucket_state, metrics = self._outer_step(
                    self._estimators[bucket], theta, outer_state, est_state[bucket], key)
                est_state = est_state[:bucket] + (bucket_state,) + est_state[bucket + 1:]
                metrics = {**metrics, "bucket": bucket}
            step += 1
            metrics = {k: float(v) for k, v in metrics.items()}
            elapsed = time.perf_counter() - start
            metrics.update(seconds=elapsed, inner_steps=step * per_step)
            metrics_log.write(step, metrics)
            meta_loss = metrics["meta_loss"]
            smoothed = meta_loss if smoothed is None or not math.isfinite(smoothed) else 0.95 * smoothed + 0.05 * meta_loss
            postfix = {"meta_loss": f"{smoothed:.4f}"}
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                last = self.evaluate(theta, step)
                eval_log.write(step, last)
                postfix["eval"] = f"{last['eval_normalized_loss']:.4f}"
            if step == start_step + 1:
                bar.set_description("meta-training")
            bar.set_postfix(postfix)
            bar.update(1)
            if manager.should_save(step, every_steps=cfg.trainer.checkpoint_every,
                                   every_seconds=60 * cfg.trainer.checkpoint_minutes) or step == total:
                manager.save(step, {"theta": theta, "outer_state": outer_state, "estimator_state": est_state},
                             {"step": step, "config": cfg.name})
        bar.close()
        seconds = time.perf_counter() - start
        theta_path = save_theta(os.path.join(self.out_dir, "theta.safetensors"), self.setup.lopt, theta,
                                extra={"outer_steps": step, "config": cfg.name})
        rows = read_metrics(os.path.join(self.out_dir, "metrics.jsonl"))
        done_here = step - start_step
        return {"step": step, "theta": theta, "theta_path": str(theta_path), "seconds": seconds,
                "inner_steps_per_s": done_here * per_step / seconds if done_here else float("nan"),
                "last_metrics": rows[-1] if rows else {}, "last_eval": last, "notes": self.notes}

