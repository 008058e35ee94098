"""Task augmentation: wrappers that widen a task distribution without new architectures.

Metz et al. (2009.11243, section 4) and VeLO widen the meta-training distribution by
transforming existing tasks. Each transformation here is a :class:`TaskWrapper`: a Task holding
an inner task whose leaves (data and settings) are its own pytree children, so a wrapped task
jits, stacks and vmaps like any other. The inner task's settings appear in the wrapper's flat
``settings`` under the prefix ``"inner/"`` (flat, so :func:`lopt.tasks.stack` and the meta
trainer, which rebuild tasks as ``type(task)(spec, data, settings)``, work unchanged).

* :class:`ReparamTask` -- function-preserving weight reparameterisation: params are stored as
  ``p / s`` and used as ``p * s`` for a fixed scale ``s`` (global, per tensor or per parameter,
  log-uniform). The loss at initialisation is unchanged; gradients are multiplied by ``s`` and
  the curvature by ``s**2``, so the optimizer sees badly scaled parameters. ``s`` is a dynamic
  setting of the params' shapes, so every mode (and no reparameterisation, ``s = 1``) shares
  one structure.
* :class:`SubsampleTask` -- a smaller training batch: training batches of ``batch_size``
  examples are drawn from the inner task (noisier gradients); evaluation batches keep the inner
  size. The batch size is a shape, so it is static.
* :class:`LossScaleTask` -- the loss (training and reported) multiplied by a dynamic factor.
* :class:`LowPrecisionTask` -- params stored in bfloat16 (updates are applied in bfloat16);
  the loss is computed in float32 from the rounded params. The dtype is static.

At the config level, the ``augmented`` family wraps any config as
``{"family": "augmented", "task": {...}, "reparam": ..., "loss_scale": ..., ...}`` (JSON, so
augmented configs can be sampled, saved and rebuilt); see :class:`AugmentedFamily`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from lopt.host_transfer import to_device
from lopt.tasks.base import Task, TaskSpec, check_split
from lopt.tasks.classification import check_int
from lopt.tasks.config import TaskConfig
from lopt.tasks.family import TaskFamily, build, get, names
from lopt.tasks.sampling import choice, log_uniform

__all__ = [
    "PRECISIONS",
    "REPARAM_MODES",
    "AugmentedFamily",
    "LossScaleTask",
    "LowPrecisionTask",
    "ReparamTask",
    "SubsampleTask",
    "TaskWrapper",
    "WrapperSpec",
    "augment",
    "batch_size_of",
    "low_precision",
    "reparam_scales",
    "reparameterize",
    "scale_loss",
    "subsample",
]

#: Reparameterisation modes: no scaling, one scale for all params, one per tensor, one per entry.
REPARAM_MODES = ("none", "global", "per_tensor", "per_parameter")
#: Param storage dtypes of :class:`AugmentedFamily`.
PRECISIONS = ("float32", "bfloat16")
INNER = "inner/"


@dataclasses.dataclass(frozen=True)
class WrapperSpec(TaskSpec):
    """Static structure of a wrapper: the inner task's spec and class, plus the wrapper's own.

    Attributes:
        inner: the inner task's spec.
        inner_type: the inner task's class (rebuilt from ``inner`` and the prefixed settings).
    """

    inner: TaskSpec | None = None
    inner_type: type | None = None


class TaskWrapper(Task):
    """A task around an inner task; by default every method forwards to the inner task.

    Subclasses override what they change. Construct wrappers with their ``wrap`` classmethods
    (the ``(spec, data, settings)`` constructor is the pytree one).

    Attributes:
        inner: the inner task, rebuilt from ``spec.inner``, ``data`` and the ``inner/`` settings.
        own_settings: the wrapper's own settings (those without the ``inner/`` prefix).
    """

    spec_type: ClassVar[type] = WrapperSpec

    @classmethod
    def _wrap(cls, inner: Task, own_settings: Mapping[str, Any], *, family: str | None = None,
              batch_size: int | None = None, **spec_fields: Any) -> TaskWrapper:
        if not isinstance(inner, Task):
            raise TypeError(f"{cls.__name__}.wrap: inner must be a Task (e.g. lopt.tasks.build(cfg)), "
                            f"got {type(inner).__name__}.")
        spec = cls.spec_type(family=family or inner.spec.family,
                             batch_size=inner.spec.batch_size if batch_size is None else batch_size,
                             inner=inner.spec, inner_type=type(inner), **spec_fields)
        settings = {INNER + k: v for k, v in inner.settings.items()}
        settings.update(own_settings)
        return cls(spec, inner.data, settings)

    @property
    def inner(self) -> Task:
        settings = {k[len(INNER):]: v for k, v in self.settings.items() if k.startswith(INNER)}
        return self.spec.inner_type(self.spec.inner, self.data, settings)

    @property
    def own_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if not k.startswith(INNER)}

    @property
    def has_accuracy(self) -> bool:  # type: ignore[override]
        return self.inner.has_accuracy

    def init(self, key):
        return self.inner.init(key)

    def loss(self, params, batch):
        return self.inner.loss(params, batch)

    def metrics(self, params, batch):
        return self.inner.metrics(params, batch)

    def sample_batch(self, key, split="train"):
        return self.inner.sample_batch(key, split)


# --- weight reparameterisation -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReparamSpec(WrapperSpec):
    """Adds ``treedef``: the structure of the params (the scales are stored as its leaves)."""

    treedef: Any = None


def reparam_scales(shapes: Sequence[tuple[int, ...]], mode: str, low: float = 0.01, high: float = 100.0,
                   seed: int = 0) -> list[np.ndarray]:
    """Log-uniform scales in ``[low, high]`` for params of the given leaf shapes.

    Args:
        shapes: the shape of every params leaf, in ``jax.tree.leaves`` order.
        mode: ``"none"`` (all ones), ``"global"`` (one draw for everything), ``"per_tensor"``
            (one draw per leaf) or ``"per_parameter"`` (one draw per entry).
        low, high: range of the scales (``0 < low <= high``).
        seed: the draws' seed.

    Returns:
        One float32 array per leaf, of that leaf's shape.

    Example:
        >>> scales = reparam_scales([(2,), (3, 2)], "per_tensor", 0.1, 10.0, seed=0)
        >>> [s.shape for s in scales], len({float(s.flat[0]) for s in scales})
        ([(2,), (3, 2)], 2)
    """
    if mode not in REPARAM_MODES:
        raise ValueError(f"reparam mode={mode!r}; use one of {REPARAM_MODES}.")
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 < low <= high):
        raise ValueError(f"reparam range=({low!r}, {high!r}) must satisfy 0 < low <= high, e.g. (0.01, 100).")
    rng = np.random.default_rng(seed)
    draw = lambda size: np.exp(rng.uniform(math.log(low), math.log(high), size))
    if mode == "none":
        return [np.ones(shape, np.float32) for shape in shapes]
    if mode == "global":
        value = draw(None)
        return [np.full(shape, value, np.float32) for shape in shapes]
    if mode == "per_tensor":
        return [np.full(shape, draw(None), np.float32) for shape in shapes]
    return [draw(shape).astype(np.float32) for shape in shapes]


class ReparamTask(TaskWrapper):
    """Params stored as ``p / s`` and used as ``p * s``: same function, rescaled gradients.

    Settings (dynamic): ``reparam/<i>``, the scale of params leaf ``i`` (its shape), plus the
    inner task's settings.

    Example:
        >>> import jax, lopt
        >>> inner = lopt.tasks.build({"family": "quadratic", "dim": 3})
        >>> task = reparameterize(inner, "per_parameter", seed=1)
        >>> key, batch = jax.random.key(0), inner.sample_batch(jax.random.key(1), "valid")
        >>> bool(abs(task.loss(task.init(key), batch) - inner.loss(inner.init(key), batch)) < 1e-5)
        True
    """

    spec_type = ReparamSpec

    @classmethod
    def wrap(cls, inner: Task, scales: Sequence[Any], *, family: str | None = None,
             shapes: Any = None) -> ReparamTask:
        """Wraps ``inner`` with one scale array per params leaf (see :func:`reparam_scales`).

        Args:
            inner: the task.
            scales: one array per params leaf, of its shape.
            family: the wrapped task's family name.
            shapes: ``jax.eval_shape(inner.init, key)`` when the caller has it (tracing
                ``init`` again is a noticeable part of building a small task).

        Raises:
            ValueError: if the number or shapes of ``scales`` do not match the params.
        """
        if shapes is None:
            shapes = jax.eval_shape(inner.init, jax.random.key(0))
        leaves, treedef = jax.tree.flatten(shapes)
        if len(scales) != len(leaves):
            raise ValueError(f"ReparamTask.wrap: got {len(scales)} scale arrays for {len(leaves)} params leaves.")
        own = {}
        for i, (leaf, scale) in enumerate(zip(leaves, scales)):
            scale = to_device(scale, np.float32)
            if scale.shape != leaf.shape:
                raise ValueError(f"ReparamTask.wrap: scale {i} has shape {scale.shape}, params leaf {i} has "
                                 f"{leaf.shape}; give one scale array per leaf, of its shape.")
            own[f"reparam/{i:04d}"] = scale
        return cls._wrap(inner, own, family=family, treedef=treedef)

    def scales(self) -> Any:
        """The scales as a pytree like the params."""
        leaves = [self.settings[f"reparam/{i:04d}"] for i in range(self.spec.treedef.num_leaves)]
        return jax.tree.unflatten(self.spec.treedef, leaves)

    def _used(self, params):
        return jax.tree.map(lambda p, s: p * s.astype(p.dtype), params, self.scales())

    def init(self, key):
        return jax.tree.map(lambda p, s: p / s.astype(p.dtype), self.inner.init(key), self.scales())

    def loss(self, params, batch):
        return self.inner.loss(self._used(params), batch)

    def metrics(self, params, batch):
        return self.inner.metrics(self._used(params), batch)


def reparameterize(task: Task, mode: str = "per_tensor", low: float = 0.01, high: float = 100.0,
                   seed: int = 0) -> ReparamTask:
    """Wraps ``task`` in a :class:`ReparamTask` with log-uniform scales (see :func:`reparam_scales`).

    Example:
        >>> import lopt
        >>> task = reparameterize(lopt.tasks.build({"family": "quadratic", "dim": 4}), "global", seed=3)
        >>> task.scales()["x"].shape
        (4,)
    """
    params = jax.eval_shape(task.init, jax.random.key(0))
    shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
    return ReparamTask.wrap(task, reparam_scales(shapes, mode, low, high, seed), shapes=params)


# --- smaller batches -----------------------------------------------------------------------------

class SubsampleTask(TaskWrapper):
    """Training batches of ``spec.batch_size`` examples, fewer than the inner task draws.

    The inner task draws batches of its ``spec.batch_size``; this wrapper draws training
    batches from a copy of it whose spec has the smaller size (so the inner task must size its
    batches by ``spec.batch_size``, as every built-in family does). Validation and test batches
    keep the inner size. No settings of its own.

    Example:
        >>> import jax, lopt
        >>> inner = lopt.tasks.build({"family": "mlp", "dataset": "digits", "batch_size": 32})
        >>> task = subsample(inner, 8)
        >>> task.sample_batch(jax.random.key(0))["x"].shape[0], task.sample_batch(jax.random.key(0), "valid")["x"].shape[0]
        (8, 32)
    """

    @classmethod
    def wrap(cls, inner: Task, batch_size: int, *, family: str | None = None) -> SubsampleTask:
        """Wraps ``inner`` so that training batches hold ``batch_size`` examples.

        Raises:
            ValueError: ``inner`` is already a wrapper (subsample the base task first), or
                ``batch_size`` is not in ``[1, inner.spec.batch_size)``.
        """
        if isinstance(inner, TaskWrapper):  # the wrappers' order is wrong, not the argument's type
            wrong_order = ("SubsampleTask.wrap: wrap the base task (subsample first, then other wrappers), "
                           f"got a {type(inner).__name__}.")
            raise ValueError(wrong_order)  # noqa: TRY004
        full = inner.spec.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size < full:
            raise ValueError(f"subsample: batch_size={batch_size!r} must be an integer in [1, {full - 1}] "
                             f"(smaller than the task's batch_size={full}).")
        return cls._wrap(inner, {}, family=family, batch_size=int(batch_size))

    def sample_batch(self, key, split="train"):
        inner = self.inner
        if check_split(split) != "train":
            return inner.sample_batch(key, split)
        smaller = type(inner)(dataclasses.replace(inner.spec, batch_size=self.spec.batch_size), inner.data,
                              inner.settings)
        return smaller.sample_batch(key, split)


def subsample(task: Task, batch_size: int) -> SubsampleTask:
    """Wraps ``task`` so that its training batches hold ``batch_size`` examples (see :class:`SubsampleTask`)."""
    return SubsampleTask.wrap(task, batch_size)


# --- loss scaling --------------------------------------------------------------------------------

class LossScaleTask(TaskWrapper):
    """The inner loss times ``settings["loss_scale"]`` (dynamic), in training and in metrics.

    Example:
        >>> import jax, lopt
        >>> inner = lopt.tasks.build({"family": "quadratic", "dim": 3})
        >>> task = scale_loss(inner, 10.0)
        >>> params, batch = inner.init(jax.random.key(0)), inner.sample_batch(jax.random.key(1))
        >>> bool(jax.numpy.allclose(task.loss(params, batch), 10 * inner.loss(params, batch)))
        True
    """

    @classmethod
    def wrap(cls, inner: Task, scale: float, *, family: str | None = None) -> LossScaleTask:
        """Wraps ``inner`` with loss scale ``scale`` (> 0)."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"scale_loss: scale={scale!r} must be a number > 0.")
        return cls._wrap(inner, {"loss_scale": jnp.float32(scale)}, family=family)

    def loss(self, params, batch):
        return self.inner.loss(params, batch) * self.settings["loss_scale"]

    def metrics(self, params, batch):
        metrics = dict(self.inner.metrics(params, batch))
        metrics["loss"] = metrics["loss"] * self.settings["loss_scale"]
        return metrics


def scale_loss(task: Task, scale: float) -> LossScaleTask:
    """Wraps ``task`` so that its loss is multiplied by ``scale`` (see :class:`LossScaleTask`)."""
    return LossScaleTask.wrap(task, scale)


# --- low precision -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LowPrecisionSpec(WrapperSpec):
    """Adds ``dtype``: the storage dtype of floating params."""

    dtype: str = "bfloat16"


class LowPrecisionTask(TaskWrapper):
    """Floating params stored in ``spec.dtype`` (bfloat16); the loss is computed in float32.

    Gradients come back in the params' dtype, so an optimizer's updates are rounded to bfloat16
    when applied: small updates can vanish, as in real low-precision training.

    Example:
        >>> import jax, lopt
        >>> task = low_precision(lopt.tasks.build({"family": "quadratic", "dim": 3}))
        >>> task.init(jax.random.key(0))["x"].dtype
        dtype(bfloat16)
    """

    spec_type = LowPrecisionSpec

    @classmethod
    def wrap(cls, inner: Task, dtype: str = "bfloat16", *, family: str | None = None) -> LowPrecisionTask:
        """Wraps ``inner`` with params stored in ``dtype`` (``"bfloat16"``)."""
        if dtype != "bfloat16":
            raise ValueError(f"low_precision: dtype={dtype!r}; only 'bfloat16' is supported.")
        return cls._wrap(inner, {}, family=family, dtype=dtype)

    @staticmethod
    def _full(params):
        return jax.tree.map(lambda p: p.astype(jnp.float32) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)

    def init(self, key):
        dtype = jnp.dtype(self.spec.dtype)
        return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                            self.inner.init(key))

    def loss(self, params, batch):
        return self.inner.loss(self._full(params), batch)

    def metrics(self, params, batch):
        return self.inner.metrics(self._full(params), batch)


def low_precision(task: Task, dtype: str = "bfloat16") -> LowPrecisionTask:
    """Wraps ``task`` so that its params are stored in ``dtype`` (see :class:`LowPrecisionTask`)."""
    return LowPrecisionTask.wrap(task, dtype)


# --- the config-level form -----------------------------------------------------------------------

def batch_size_of(cfg: Mapping[str, Any]) -> int | None:
    """The training batch size a complete config's task will draw, if the config decides it.

    ``None`` for configs without a ``batch_size`` key, and for families whose
    ``static_config`` leaves it out (e.g. the ``losg`` test functions, which have no data).

    Example:
        >>> import lopt
        >>> batch_size_of(lopt.tasks.get("mlp").default_config()), batch_size_of({"family": "quadratic"})
        (128, None)
    """
    family = get(cfg["family"])
    value = family.static_config(family.complete(cfg)).get("batch_size") if hasattr(family, "static_config") \
        else cfg.get("batch_size")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def augment(cfg: Mapping[str, Any], **options: Any) -> TaskConfig:
    """The ``augmented`` config wrapping ``cfg`` with ``options`` (keys of :class:`AugmentedFamily`).

    Example:
        >>> import lopt
        >>> cfg = augment({"family": "quadratic", "dim": 4}, reparam="global", loss_scale=10.0)
        >>> cfg["task"]["dim"], lopt.tasks.build(cfg).name
        (4, 'augmented')
    """
    return get(AugmentedFamily.name).complete({"task": dict(cfg), **options})


class AugmentedFamily(TaskFamily):
    """Any task config with augmentations, as one JSON config.

    Config keys (defaults): ``task`` (the inner config, completed; ``{"family": "quadratic"}``),
    ``reparam`` ("none"; one of :data:`REPARAM_MODES`), ``reparam_range`` ([0.01, 100.0]:
    the log-uniform range of the scales), ``reparam_seed`` (0), ``batch_size`` (null: the inner
    batch size; else a smaller training batch), ``loss_scale`` (1.0) and ``precision``
    ("float32" or "bfloat16").

    The built task is always ``LossScaleTask(ReparamTask([SubsampleTask](inner)))``, plus
    ``LowPrecisionTask`` outside for bfloat16, so configs that differ only in ``reparam``,
    ``reparam_range``, ``reparam_seed``, ``loss_scale`` (and the inner task's dynamic keys)
    share a structure and stack; ``batch_size`` and ``precision`` are static.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("augmented")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and cfg["task"]["family"] in lopt.tasks.names()
        True
    """

    name = "augmented"
    description = "Any family's config with weight reparameterisation, smaller batches, loss scaling, bfloat16."

    def defaults(self):
        return {"task": {"family": "quadratic"}, "reparam": "none", "reparam_range": [0.01, 100.0],
                "reparam_seed": 0, "batch_size": None, "loss_scale": 1.0, "precision": "float32"}

    def sampling_ranges(self):
        return {"task": "a config of a family drawn uniformly from the registered families except 'augmented' "
                        "and 'fixed', sampled by that family",
                "reparam": f"uniform over {REPARAM_MODES}",
                "reparam_range": "[0.01, 100]",
                "reparam_seed": "uniform integer in [0, 2^31)",
                "batch_size": "null (75%) or the inner batch size divided by 2, 4 or 8 (when the inner "
                              "config has a batch_size > 1)",
                "loss_scale": "1 (half the time) or log-uniform in [1e-3, 1e3]",
                "precision": "'float32' (90%) or 'bfloat16'"}

    def sample_config(self, rng):
        inner_names = [n for n in names() if n not in (self.name, "fixed")]
        inner = get(choice(rng, inner_names)).sample(int(rng.integers(2**31)))
        batch = batch_size_of(inner)
        subsampled = None
        if isinstance(batch, int) and batch > 1 and rng.uniform() < 0.25:
            subsampled = max(1, batch // int(choice(rng, (2, 4, 8))))
        return {"task": inner.to_dict(), "reparam": choice(rng, REPARAM_MODES),
                "reparam_seed": int(rng.integers(2**31)), "batch_size": subsampled,
                "loss_scale": 1.0 if rng.uniform() < 0.5 else log_uniform(rng, 1e-3, 1e3),
                "precision": "bfloat16" if rng.uniform() < 0.1 else "float32"}

    def complete(self, cfg: Mapping[str, Any]) -> TaskConfig:
        cfg = dict(cfg)
        inner = cfg.get("task", self.defaults()["task"])
        if not isinstance(inner, Mapping) or "family" not in inner:
            raise ValueError(f"augmented: task={inner!r} must be a task config with a 'family' key, "
                             "e.g. {'family': 'mlp'}.")
        cfg["task"] = get(inner["family"]).complete(inner)
        return super().complete(cfg)

    def validate(self, cfg):
        if cfg["reparam"] not in REPARAM_MODES:
            raise ValueError(f"augmented: reparam={cfg['reparam']!r}; use one of {REPARAM_MODES}.")
        bounds = cfg["reparam_range"]
        ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
              and 0 < bounds[0] <= bounds[1])
        if not ok:
            raise ValueError(f"augmented: reparam_range={bounds!r} must be [low, high] with 0 < low <= high.")
        check_int(self.name, "reparam_seed", cfg["reparam_seed"], minimum=0)
        if cfg["batch_size"] is not None:
            check_int(self.name, "batch_size", cfg["batch_size"])
        scale = cfg["loss_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"augmented: loss_scale={scale!r} must be a number > 0.")
        if cfg["precision"] not in PRECISIONS:
            raise ValueError(f"augmented: precision={cfg['precision']!r}; use one of {PRECISIONS}.")

    def dynamic_keys(self) -> tuple[str, ...]:
        """The augmentation keys that only change dynamic settings (the inner task's own are added)."""
        return ("reparam", "reparam_range", "reparam_seed", "loss_scale")

    def make_task(self, cfg):
        task = build(cfg["task"])
        if cfg["batch_size"] is not None:
            task = SubsampleTask.wrap(task, cfg["batch_size"], family=self.name)
        params = jax.eval_shape(task.init, jax.random.key(0))
        low, high = cfg["reparam_range"]
        scales = reparam_scales([leaf.shape for leaf in jax.tree.leaves(params)], cfg["reparam"], low, high,
                                cfg["reparam_seed"])
        task = ReparamTask.wrap(task, scales, family=self.name, shapes=params)
        task = LossScaleTask.wrap(task, float(cfg["loss_scale"]), family=self.name)
        if cfg["precision"] == "bfloat16":
            task = LowPrecisionTask.wrap(task, family=self.name)
        return task
