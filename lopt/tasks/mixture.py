"""Mixtures of task families, the default ``taskset`` distribution, and shape buckets.

Metz et al. found that more, and more diverse, training tasks give learned optimizers that
generalise better (they used about 6,000). Compiling a program per task would make that
unaffordable, so a :class:`Mixture` separates what compiles from what does not:

* A **structure** is what decides the compiled program: everything static about a task
  (architecture, shapes, batch size, dataset, dtype). :func:`structure_key` names it from a
  config; two configs have equal keys exactly when their built tasks stack
  (:func:`lopt.tasks.stack`), i.e. share one program under ``vmap``.
* Each family of the mixture gets a bounded **catalogue** of ``num_structures`` structures,
  drawn once (deterministically from ``seed``) with the family's own sampler, optionally under
  a :class:`~lopt.tasks.budget.Budget`.
* Inside a structure, **variants** differ only in dynamic settings: the family's dynamic keys
  (init scale, seeds, noise, problem of a kind, loss type...) drawn from the family's
  ``variation_grid``, and dynamic augmentations (weight reparameterisation mode and seed, loss
  scale; see :mod:`lopt.tasks.augment`). Some structures of the catalogue also carry static
  augmentations (a smaller batch, bfloat16 params).

So ``num_buckets`` compiles serve ``num_buckets * configs_per_bucket`` configs at a time, and
re-drawing the variants of a bucket (:meth:`Mixture.variants`) yields new configs that reuse
the compiled program. A whole run touches at most ``len(dist.structures())`` programs, however
many buckets it draws.

Example:
    >>> import jax, lopt
    >>> dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=2)
    >>> buckets = dist.buckets(jax.random.key(0), num_buckets=2, configs_per_bucket=3)
    >>> [len(b) for b in buckets]
    [3, 3]
    >>> all(len({lopt.tasks.structure_key(c) for c in bucket}) == 1 for bucket in buckets)
    True
    >>> stacked = [lopt.tasks.stack([lopt.tasks.build(c) for c in bucket]) for bucket in buckets]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lopt.tasks.augment import REPARAM_MODES, batch_size_of
from lopt.tasks.budget import Budget, task_signature
from lopt.tasks.catalogue import draw_catalogues
from lopt.tasks.config import TaskConfig
from lopt.tasks.cost_workers import worker_count
from lopt.tasks.family import build, get, names
from lopt.tasks.sampling import numpy_rng

__all__ = ["TASKSET_BUDGET", "Augmentation", "Mixture", "base_family", "mixture", "structure_key", "taskset",
           "variation_grid"]

AUGMENTED = "augmented"
#: Families left out of :func:`taskset`: wrappers of other families' configs, and families kept
#: unseen for held-out evaluation (:mod:`lopt.pretrained.heldout`).
NOT_IN_TASKSET = (AUGMENTED, "fixed", "transformer_lm", "regression")
INIT_SCALES = (0.5, 0.71, 1.0, 1.41, 2.0)

# Families defined before this module that do not declare ``static_config``/``variation_grid``:
# their dynamic config keys and the values a mixture varies them over.
_BUILTIN_GRIDS: dict[str, dict[str, tuple]] = {
    "quadratic": {"condition_number": (1.0, 10.0, 100.0, 1000.0, 10000.0), "rotate": (True, False),
                  "noise": (0.0, 0.01, 0.1, 1.0), "init_scale": (0.5, 1.0, 2.0), "seed": tuple(range(4))},
    "mlp": {"init_scale": INIT_SCALES},
    "conv_pooling": {"init_scale": INIT_SCALES},
    "conv_fc": {"init_scale": INIT_SCALES},
}


def _per_layer(value: Any, num_layers: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * num_layers


def _builtin_static(cfg: TaskConfig) -> dict[str, Any]:
    static = {k: v for k, v in cfg.to_dict().items() if k not in _BUILTIN_GRIDS[cfg["family"]]}
    if "channels" in static:  # conv: one stride/padding for all layers equals the per-layer list
        static["strides"] = _per_layer(static["strides"], len(static["channels"]))
        static["padding"] = _per_layer(static["padding"], len(static["channels"]))
    return static


@functools.lru_cache(maxsize=4096)
def _structure(cfg: TaskConfig) -> Any:
    family = get(cfg["family"])
    if family.name == AUGMENTED:
        return [AUGMENTED, cfg["batch_size"], cfg["precision"], _structure(cfg["task"])]
    if family.name == "fixed":
        return ["fixed", cfg["name"]]
    if hasattr(family, "static_config"):
        return [family.name, family.static_config(cfg)]
    if hasattr(family, "dynamic_keys"):
        return [family.name, {k: v for k, v in cfg.to_dict().items() if k not in family.dynamic_keys()}]
    if family.name in _BUILTIN_GRIDS:
        return [family.name, _builtin_static(cfg)]
    # Any other family: build it and name the structure of the built task (exact, but builds).
    return [family.name, "built", repr(task_signature(build(cfg)))]


def structure_key(cfg: Mapping[str, Any]) -> str:
    """A string naming the compiled structure of ``cfg``: equal keys <=> the built tasks stack.

    Computed from the config alone for the families that declare ``static_config(cfg)`` or
    ``dynamic_keys()`` and for the older built-in ones (quadratic, mlp, conv); any other family's
    config is built once (cached) to read the structure off the task (the language families).

    Example:
        >>> a = structure_key({"family": "quadratic", "dim": 5, "seed": 1})
        >>> a == structure_key({"family": "quadratic", "dim": 5, "noise": 0.3})
        True
        >>> a == structure_key({"family": "quadratic", "dim": 6})
        False
    """
    if not isinstance(cfg, Mapping) or "family" not in cfg:
        raise ValueError(f"structure_key: cfg must be a task config with a 'family' key, got {cfg!r}.")
    return json.dumps(_structure(get(cfg["family"]).complete(cfg)), sort_keys=True)


def base_family(cfg: Mapping[str, Any]) -> str:
    """The family of ``cfg``, looking through ``augmented`` wrappers.

    Example:
        >>> base_family({"family": "augmented", "task": {"family": "mlp"}})
        'mlp'
    """
    while cfg["family"] == AUGMENTED:
        cfg = cfg["task"]
    return cfg["family"]


@functools.cache
def _init_scale_is_dynamic(name: str) -> bool:
    family = get(name)
    if "init_scale" not in family.defaults():
        return False
    default = family.default_config()
    other = default.replace(init_scale=2.0 * float(default["init_scale"]))
    return task_signature(build(default)) == task_signature(build(other))


def variation_grid(cfg: Mapping[str, Any]) -> dict[str, tuple]:
    """The dynamic keys of ``cfg``'s family and the values a mixture varies them over.

    Families declare it with a ``variation_grid(cfg)`` method; the built-in image and quadratic
    families have a fixed table here; for any other family, ``init_scale`` is varied if
    changing it keeps the structure (checked once per family by building two tasks).

    Example:
        >>> sorted(variation_grid({"family": "mlp"}))
        ['init_scale']
    """
    family = get(cfg["family"])
    if hasattr(family, "variation_grid"):
        return {k: tuple(v) for k, v in family.variation_grid(family.complete(cfg)).items()}
    if family.name in _BUILTIN_GRIDS:
        return dict(_BUILTIN_GRIDS[family.name])
    if family.name not in NOT_IN_TASKSET and _init_scale_is_dynamic(family.name):
        return {"init_scale": INIT_SCALES}
    return {}


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How a mixture augments its configs (see :mod:`lopt.tasks.augment`).

    Dynamic (varied inside a structure): the weight reparameterisation (``"none"``, or one of
    the three scaled modes with one of ``reparam_seeds`` seeds, scales log-uniform in
    ``reparam_range``) and the loss scale (one of ``loss_scales``).

    Static (drawn per structure of the catalogue): with probability ``subsample_probability``
    a training batch ``batch_size // d`` for ``d`` in ``subsample_divisors`` (families with a
    ``batch_size`` > 1), and bfloat16 params with probability ``bfloat16_probability``.
    """

    reparam_seeds: int = 4
    reparam_range: tuple[float, float] = (0.01, 100.0)
    loss_scales: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    subsample_probability: float = 0.25
    subsample_divisors: tuple[int, ...] = (2, 4, 8)
    bfloat16_probability: float = 0.1

    def reparam_options(self) -> tuple[tuple[str, int], ...]:
        """The ``(mode, seed)`` pairs: ``("none", 0)`` and each scaled mode with each seed."""
        return (("none", 0),) + tuple((mode, seed) for mode in REPARAM_MODES[1:] for seed in range(self.reparam_seeds))

    def num_variants(self) -> int:
        """Distinct dynamic augmentations: reparameterisations times loss scales."""
        return len(self.reparam_options()) * len(self.loss_scales)


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"mixture: weights must be a non-empty mapping family -> weight, e.g. "
                         f"{{'mlp': 1.0, 'conv_pooling': 0.5}}; got {weights!r}.")
    for name, weight in weights.items():
        get(name)  # unknown names fail here, listing the valid ones
        if name == AUGMENTED:
            raise ValueError("mixture: 'augmented' is not a family to mix; pass augmentation=Augmentation(...).")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or math.isinf(weight):
            raise ValueError(f"mixture: weight {weight!r} of {name!r} must be a finite number >= 0.")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mixture: the weights {dict(weights)} sum to 0; give some family a positive weight.")
    return {name: float(w) / total for name, w in sorted(weights.items()) if w > 0}


def _decode(index: int, sizes: Sequence[int]) -> list[int]:
    digits = []
    for size in reversed(sizes):
        index, digit = divmod(index, size)
        digits.append(digit)
    return digits[::-1]


def _distinct_indices(rng: np.random.Generator, total: int, count: int) -> list[int]:
    if count <= total <= 10**7:
        return [int(i) for i in rng.choice(total, size=count, replace=False)]
    if count > total:  # more configs asked for than exist: repeat some
        return [int(i) for i in rng.integers(total, size=count)]
    seen: dict[int, None] = {}
    while len(seen) < count:
        seen.setdefault(int(rng.integers(total)), None)
    return list(seen)


class Mixture:
    """A weighted mixture of task families served as a bounded set of compiled structures.

    Args:
        weights: ``{family name: weight}``; weights are normalised (zero weights drop a family).
        num_structures: catalogue size per family (fewer if the family has fewer structures or
            the budget rejects them).
        augmentation: how configs are augmented; ``None`` keeps the families' own configs.
        budget: structures whose cost exceeds it are left out of the catalogue.
        seed: the catalogue's seed (the structures are a deterministic function of it).
        max_tries: candidate configs drawn per catalogue entry before a family's catalogue
            is closed (so a family with few structures, or a tight budget, terminates).

    Example:
        >>> import jax, lopt
        >>> dist = lopt.tasks.mixture({"mlp": 1.0, "quadratic": 0.5}, num_structures=3)
        >>> cfg = dist.sample(jax.random.key(0))
        >>> cfg["family"], dist.family_of(cfg) in ("mlp", "quadratic")
        ('augmented', True)
    """

    def __init__(self, weights: Mapping[str, float], *, num_structures: int = 16,
                 augmentation: Augmentation | None = Augmentation(), budget: Budget | None = None, seed: int = 0,
                 max_tries: int = 20):
        self.weights = _check_weights(weights)
        for name, value in (("num_structures", num_structures), ("max_tries", max_tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"mixture: {name}={value!r} must be a positive integer.")
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(f"mixture: augmentation must be an Augmentation or None, got {augmentation!r}.")
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"mixture: budget must be a lopt.tasks.Budget or None, got {budget!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"mixture: seed={seed!r} must be a non-negative integer.")
        self.num_structures = num_structures
        self.augmentation = augmentation
        self.budget = budget
        self.seed = seed
        self.max_tries = max_tries
        self._catalogue: dict[str, list[TaskConfig]] = {}

    def __repr__(self) -> str:
        weights = ", ".join(f"{k}: {v:.3g}" for k, v in self.weights.items())
        return f"Mixture({{{weights}}}, num_structures={self.num_structures})"

    # --- the catalogue of structures -----------------------------------------------------------

    def _augment_structure(self, cfg: TaskConfig, rng: np.random.Generator) -> TaskConfig:
        aug = self.augmentation
        if aug is None:
            return cfg
        batch = batch_size_of(cfg)
        subsampled = None
        if isinstance(batch, int) and batch > 1 and rng.uniform() < aug.subsample_probability:
            subsampled = max(1, batch // int(aug.subsample_divisors[rng.integers(len(aug.subsample_divisors))]))
            subsampled = subsampled if subsampled < batch else None
        precision = "bfloat16" if rng.uniform() < aug.bfloat16_probability else "float32"
        return get(AUGMENTED).complete({"task": cfg.to_dict(), "batch_size": subsampled, "precision": precision,
                                        "reparam_range": list(aug.reparam_range)})

    def _propose(self, family: str, rng: np.random.Generator) -> TaskConfig:
        return self._augment_structure(get(family).sample(int(rng.integers(2**31))), rng)

    def _draw_catalogues(self, families: list[str]) -> None:
        """Draws the catalogues of ``families`` not drawn yet, their costs estimated together."""
        missing = [f for f in families if f not in self._catalogue]
        if missing:
            self._catalogue.update(draw_catalogues(
                missing, self._propose, key_of=structure_key, num_structures=self.num_structures,
                max_tries=self.max_tries, budget=self.budget, seed=self.seed))

    def structures(self, family: str | None = None) -> list[TaskConfig]:
        """The catalogue: one representative config per structure (of ``family``, or of all).

        Drawn on first use, deterministically from ``seed``: the family's sampler proposes
        configs (seed ``i`` of a stream keyed by the family name), new structures that fit
        the budget are kept, until ``num_structures`` are found or ``max_tries`` candidates per
        entry were drawn (:mod:`lopt.tasks.catalogue`; with idle cores, the candidates' costs are
        estimated in worker processes).
        """
        if family is not None and family not in self.weights:
            raise ValueError(f"Mixture.structures: {family!r} is not in this mixture; its families are "
                             f"{list(self.weights)}.")
        self._draw_catalogues(list(self.weights) if family is None else [family])
        if family is None:
            return [cfg for name in self.weights for cfg in self._catalogue[name]]
        return list(self._catalogue[family])

    # --- variants of one structure -------------------------------------------------------------

    def _grid(self, structure: TaskConfig) -> tuple[dict[str, tuple], list[tuple]]:
        inner = structure["task"] if structure["family"] == AUGMENTED else structure
        native = variation_grid(inner)
        axes = [values for values in native.values()]
        if self.augmentation is not None:
            axes += [self.augmentation.reparam_options(), self.augmentation.loss_scales]
        return native, axes

    def num_variants(self, structure: Mapping[str, Any]) -> int:
        """How many distinct configs :meth:`variants` can draw for ``structure``."""
        _, axes = self._grid(TaskConfig(structure))
        return math.prod(len(a) for a in axes)

    def _variant(self, structure: TaskConfig, index: int) -> TaskConfig:
        native, axes = self._grid(structure)
        digits = _decode(index, [len(a) for a in axes])
        values = [axis[d] for axis, d in zip(axes, digits)]
        changes = dict(zip(native, values[:len(native)]))
        if self.augmentation is None:
            return structure.replace(**changes)
        (mode, seed), scale = values[len(native):]
        inner = structure["task"].replace(**changes)
        return structure.replace(task=inner, reparam=mode, reparam_seed=seed, loss_scale=float(scale))

    def variants(self, structure: Mapping[str, Any], key: Any, num: int) -> list[TaskConfig]:
        """``num`` configs of ``structure``'s structure that differ in dynamic settings only.

        Distinct whenever ``num <= num_variants(structure)``. All of them stack with each other
        and with any earlier variant of the structure, so a jitted function traced for one
        bucket serves re-drawn variants without recompiling.

        Example:
            >>> import lopt
            >>> dist = lopt.tasks.mixture({"quadratic": 1.0}, num_structures=1)
            >>> configs = dist.variants(dist.structures()[0], 0, 4)
            >>> len(set(configs)), len({lopt.tasks.structure_key(c) for c in configs})
            (4, 1)
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"Mixture.variants: num={num!r} must be a positive integer.")
        structure = TaskConfig(structure)
        rng = numpy_rng(key)
        indices = _distinct_indices(rng, self.num_variants(structure), num)
        return [self._variant(structure, i) for i in indices]

    # --- sampling ------------------------------------------------------------------------------

    def family_of(self, cfg: Mapping[str, Any]) -> str:
        """The mixture family that ``cfg`` came from (looks through ``augmented``)."""
        return base_family(cfg)

    def _family(self, rng: np.random.Generator) -> str:
        families = list(self.weights)
        return families[int(rng.choice(len(families), p=list(self.weights.values())))]

    def sample(self, key: Any) -> TaskConfig:
        """Draws one config: a family by weight, a structure of its catalogue, a variant of it.

        Deterministic per int seed or JAX key; nothing is built (beyond the catalogue of a
        family drawn for the first time).
        """
        rng = numpy_rng(key)
        catalogue = self.structures(self._family(rng))
        structure = catalogue[int(rng.integers(len(catalogue)))]
        return self._variant(structure, int(rng.integers(self.num_variants(structure))))

    def buckets(self, key: Any, num_buckets: int, configs_per_bucket: int) -> list[list[TaskConfig]]:
        """Draws ``num_buckets`` stackable groups of ``configs_per_bucket`` configs.

        Each bucket is one structure of the catalogue (a family drawn by weight, then a
        structure of it not yet used in this call while any is left) and
        ``configs_per_bucket`` distinct variants of it. Stack a bucket with
        ``lopt.tasks.stack([lopt.tasks.build(c) for c in bucket])``: one compiled program per
        bucket. To keep the programs and change the tasks, re-draw a bucket's configs with
        :meth:`variants` (same structure, new dynamic settings).

        Args:
            key: int seed or JAX key (the result is deterministic per key).
            num_buckets: number of buckets (compiled structures).
            configs_per_bucket: configs per bucket (the vmapped pool size).

        Returns:
            ``num_buckets`` lists of ``configs_per_bucket`` configs; within a list all
            :func:`structure_key` values are equal.
        """
        for name, value in (("num_buckets", num_buckets), ("configs_per_bucket", configs_per_bucket)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Mixture.buckets: {name}={value!r} must be a positive integer.")
        rng = numpy_rng(key)
        if self.budget is not None and num_buckets > 1 and worker_count() > 1:
            self._draw_catalogues(list(self.weights))  # one parallel draw instead of one per family
        used: set[str] = set()
        result = []
        for _ in range(num_buckets):
            catalogue = self.structures(self._family(rng))
            fresh = [s for s in catalogue if structure_key(s) not in used] or catalogue
            structure = fresh[int(rng.integers(len(fresh)))]
            used.add(structure_key(structure))
            result.append(self.variants(structure, int(rng.integers(2**31)), configs_per_bucket))
        return result

    # --- arithmetic ----------------------------------------------------------------------------

    def num_configs(self) -> int:
        """Distinct configs the mixture can draw: the sum over the catalogue of its variants."""
        return sum(self.num_variants(s) for s in self.structures())

    def summary(self) -> dict[str, Any]:
        """Families with weights, structures and distinct configs each, and the totals."""
        rows = {name: {"weight": weight, "structures": len(self.structures(name)),
                       "configs": sum(self.num_variants(s) for s in self.structures(name))}
                for name, weight in self.weights.items()}
        return {"families": rows, "structures": sum(r["structures"] for r in rows.values()),
                "configs": sum(r["configs"] for r in rows.values())}


def mixture(weights: Mapping[str, float], **options: Any) -> Mixture:
    """A :class:`Mixture` of families with the given weights (options as for :class:`Mixture`).

    Example:
        >>> import lopt
        >>> dist = lopt.tasks.mixture({"mlp": 1.0, "conv_pooling": 0.5}, num_structures=4)
        >>> round(dist.weights["mlp"], 3)
        0.667
    """
    return Mixture(weights, **options)


#: The default budget of :func:`taskset`: small tasks, at most ~2e8 FLOPs per step.
TASKSET_BUDGET = Budget(max_params=500_000, max_flops=2e8)


def taskset(families: Sequence[str] | None = None, *, num_structures: int = 16,
            budget: Budget | None = TASKSET_BUDGET, augmentation: Augmentation | None = Augmentation(),
            seed: int = 0) -> Mixture:
    """The default task distribution: every registered family, equally weighted, augmented.

    Args:
        families: the families (default: every registered family except ``augmented`` and
            ``fixed``).
        num_structures: catalogue size per family.
        budget: per-step cost bound of a structure (default :data:`TASKSET_BUDGET`; costs are
            estimated by building and lowering each candidate structure once).
        augmentation: see :class:`Augmentation`.
        seed: the catalogue's seed.

    Example:
        >>> import lopt
        >>> dist = lopt.tasks.taskset(["quadratic", "losg"], num_structures=2, budget=None)
        >>> sorted(dist.weights)
        ['losg', 'quadratic']
    """
    if families is None:
        families = [n for n in names() if n not in NOT_IN_TASKSET]
    return Mixture({name: 1.0 for name in families}, num_structures=num_structures, augmentation=augmentation,
                   budget=budget, seed=seed)
