"""Validation of a meta-training config before anything runs: every bad value named with its key and the fix.

:func:`validate_config` is what :func:`lopt.meta.load_config` applies to every config it returns
(so ``lopt train --show-config`` never prints a config a run would refuse) and what
:class:`lopt.meta.MetaTrainer` applies first (configs built in Python). It is cheap: it builds
the learned optimizer, the truncation schedule, the task config and the outer optimizer from
their settings, but no task data, normaliser or compiled program.

Example:
    >>> from lopt.meta.config import MetaTrainConfig
    >>> cfg = MetaTrainConfig()
    >>> cfg.final_eval.adam_learning_rates = []
    >>> validate_config(cfg)
    Traceback (most recent call last):
    ...
    ValueError: final_eval.adam_learning_rates=[] must be a non-empty list of learning rates > 0 ...
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["validate_config"]

ESTIMATOR_OBJECTIVES = ("train", "valid")
FULL_ES_META_LOSSES = ("mean", "final")

#: ``section.key``: smallest allowed value (ints are checked to be ints by the config loader).
AT_LEAST = {
    "estimator.num_tasks": 1, "estimator.unroll_length": 1,
    "truncation.horizon": 1, "truncation.min_horizon": 1, "truncation.max_horizon": 1,
    "normalizer.num_steps": 0, "normalizer.num_seeds": 1,
    "outer.clip_grad_norm": 0.0,
    "trainer.outer_steps": 1, "trainer.eval_every": 0, "trainer.eval_tasks": 1, "trainer.eval_steps": 0,
    "trainer.checkpoint_every": 1, "trainer.checkpoint_minutes": 0.0, "trainer.keep_checkpoints": 1,
    "trainer.max_minutes": 0.0,
    "task.num_buckets": 1, "task.configs_per_bucket": 1, "task.redraw_every": 0, "task.heldout_per_bucket": 0,
    "final_eval.steps": 1, "final_eval.seeds": 1,
}
#: ``section.key`` that must be > 0.
POSITIVE = ("estimator.std", "outer.learning_rate")


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_bounds(cfg: Any) -> None:
    for key, low in AT_LEAST.items():
        value = _get(cfg, key)
        if not _number(value) or value < low:
            raise ValueError(f"{key}={value!r} must be >= {low}; set --set {key}=<a value >= {low}>.")
    for key in POSITIVE:
        value = _get(cfg, key)
        if not _number(value) or value <= 0:
            raise ValueError(f"{key}={value!r} must be a finite number > 0; set --set {key}=<a value > 0>.")


def _check_lists(cfg: Any) -> None:
    """List- and dict-valued settings: element types and the lists that may not be empty."""
    rates = cfg.final_eval.adam_learning_rates
    needed = cfg.final_eval.enabled or rates  # [] is harmless while the comparison is off
    if needed and (not isinstance(rates, list) or not rates or not all(_number(r) and r > 0 for r in rates)):
        raise ValueError(f"final_eval.adam_learning_rates={rates!r} must be a non-empty list of learning rates > 0 "
                         "(the Adam baselines of the final comparison), e.g. --set "
                         "final_eval.adam_learning_rates=[1e-3,3e-3,1e-2]; to skip the comparison, set "
                         "final_eval.enabled=false.")
    seeds = cfg.task.pool_seeds
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ValueError(f"task.pool_seeds={seeds!r} must be a list of distinct ints >= 0 (or [] for a pool of the "
                         "single task.config), e.g. --set task.pool_seeds=[0,1,2,3].")
    held = cfg.task.heldout_families
    if not all(isinstance(f, str) and f for f in held):
        raise ValueError(f"task.heldout_families={held!r} must be a list of family names (or []), e.g. "
                         "--set 'task.heldout_families=[\"conv\"]'.")
    weights = cfg.task.mixture
    if not all(isinstance(k, str) and _number(w) and w > 0 for k, w in weights.items()):
        raise ValueError(f"task.mixture={weights!r} must map family names to weights > 0 (or be {{}} for a "
                         "single family), e.g. --set 'task.mixture={\"mlp\": 1, \"conv\": 1}'.")
    structures = cfg.task.structures
    if not all(isinstance(s, dict) and s.get("family") for s in structures):
        raise ValueError(f"task.structures={structures!r} must be a list of task configs that each name their "
                         "\"family\" (or [] to draw task.num_buckets structures from the mixture).")
    if (held or structures) and not weights:
        key = "task.heldout_families" if held else "task.structures"
        raise ValueError(f"{key} is set but task.mixture is empty: it only applies to mixture runs; set "
                         "task.mixture (e.g. --set 'task.mixture={\"taskset\": 1}') or remove it.")


def _check_choices(cfg: Any) -> None:
    from lopt.meta.bucket_gradients import BUCKET_WEIGHTINGS
    from lopt.meta.estimators import ESTIMATORS
    from lopt.meta.unroll import EPISODE_WEIGHTINGS

    est = cfg.estimator
    if est.kind not in ESTIMATORS:
        raise ValueError(f"estimator.kind={est.kind!r} is unknown; use one of {sorted(ESTIMATORS)}.")
    if est.objective not in ESTIMATOR_OBJECTIVES:
        raise ValueError(f"estimator.objective={est.objective!r} is unknown; use one of {list(ESTIMATOR_OBJECTIVES)}.")
    if est.episode_weighting not in EPISODE_WEIGHTINGS:
        raise ValueError(f"estimator.episode_weighting={est.episode_weighting!r} is unknown; use one of "
                         f"{list(EPISODE_WEIGHTINGS)}.")
    if cfg.outer.bucket_weighting not in BUCKET_WEIGHTINGS:
        raise ValueError(f"outer.bucket_weighting={cfg.outer.bucket_weighting!r} is unknown; use one of "
                         f"{list(BUCKET_WEIGHTINGS)}.")
    seed = cfg.task.heldout_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < -1:
        raise ValueError(f"task.heldout_seed={seed!r} must be an int >= 0 (or -1: the run's seed).")
    if est.full_es_meta_loss not in FULL_ES_META_LOSSES:
        raise ValueError(f"estimator.full_es_meta_loss={est.full_es_meta_loss!r} is unknown; use one of "
                         f"{list(FULL_ES_META_LOSSES)}.")
    if cfg.task.mixture and est.kind != "pes":
        raise ValueError(f"estimator.kind={est.kind!r}: mixture runs use 'pes' (set estimator.kind=pes).")


def _built(key: str, build: Any) -> Any:
    """Runs ``build`` and names ``key`` in any error it raises."""
    try:
        return build()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: {err}") from None


def _check_components(cfg: Any) -> None:
    """Builds what the settings name: learned optimizer, schedule, task config(s), outer optimizer."""
    import lopt.learned
    import lopt.tasks
    from lopt.meta.trainer import _outer_optimizer
    from lopt.meta.truncation import make_schedule

    _built("lopt", lambda: lopt.learned.get(cfg.lopt.name, **cfg.lopt.config))
    trunc = cfg.truncation
    _built("truncation", lambda: make_schedule(trunc.kind, horizon=trunc.horizon, min_horizon=trunc.min_horizon,
                                               max_horizon=trunc.max_horizon))
    if trunc.kind == "log_uniform" and trunc.min_horizon > trunc.max_horizon:
        raise ValueError(f"truncation.min_horizon={trunc.min_horizon} exceeds truncation.max_horizon="
                         f"{trunc.max_horizon}; make min_horizon <= max_horizon.")
    known = lopt.tasks.names()
    if cfg.task.mixture:
        unknown = [f for f in [*cfg.task.mixture, *cfg.task.heldout_families] if f not in (*known, "taskset")]
        if unknown:
            raise ValueError(f"task.mixture/task.heldout_families: unknown families {unknown}; use 'taskset' or "
                             f"names from {list(known)}.")
        for index, structure in enumerate(cfg.task.structures):
            _built(f"task.structures[{index}]", lambda s=structure: lopt.tasks.get(s["family"]).complete(s))
    else:
        family = _built("task.family", lambda: lopt.tasks.get(cfg.task.family))
        _built("task.config", lambda: family.complete(cfg.task.config))
    _built("outer", lambda: _outer_optimizer(cfg))


def validate_config(cfg: Any) -> Any:
    """Checks every setting of a :class:`~lopt.meta.MetaTrainConfig`; returns it unchanged.

    Raises:
        ValueError: the first bad setting, naming its ``section.key``, its value and the fix.
    """
    _check_bounds(cfg)
    _check_lists(cfg)
    _check_choices(cfg)
    _check_components(cfg)
    return cfg
