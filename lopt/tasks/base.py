"""The Task contract: a training problem whose data and dynamic settings are pytree leaves.

A :class:`Task` is *data, not a process*. It is a pytree whose leaves are

* ``data``: the dataset arrays of every split (device arrays, shared by all tasks of a family
  that use the same dataset), and
* ``settings``: a dict of *dynamic* scalars (seeds, init scales, activation index, noise
  levels...) that may differ between tasks of one structure,

and whose static part is ``spec``, a frozen hashable dataclass holding everything that decides
what compiles (shapes, batch size, layer widths). Passing a task into a jitted function passes
its arrays as arguments (never baked-in constants), batches are drawn inside jit from a key,
and tasks of one spec can be stacked and vmapped (see :func:`lopt.tasks.stack`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax

__all__ = ["SPLITS", "Task", "TaskSpec", "check_split"]

SPLITS = ("train", "valid", "test")

Params = Any
Batch = Any


def check_split(split: str) -> str:
    """Returns ``split`` if it is one of :data:`SPLITS`, else raises a ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a data split; use one of {SPLITS}.")
    return split


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static structure of a task (hashable; decides what compiles).

    Attributes:
        family: name of the family that built the task.
        batch_size: examples per training batch (also used for evaluation batches).
    """

    family: str
    batch_size: int


class Task(abc.ABC):
    """A training problem: ``init`` params, compute ``loss`` on a batch, draw batches.

    Subclasses implement :meth:`init` and :meth:`loss`, and may override :meth:`metrics` and
    :meth:`sample_batch`. Every subclass is registered as a pytree automatically.

    Attributes:
        spec: static structure (a frozen dataclass; part of the pytree's treedef).
        data: a :class:`~lopt.tasks.Dataset` or ``None`` (pytree leaves, shared across tasks).
        settings: dict of dynamic scalar arrays (pytree leaves; stacked when tasks are stacked).

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
        >>> params = task.init(jax.random.key(0))
        >>> batch = task.sample_batch(jax.random.key(1), "train")
        >>> float(task.loss(params, batch)) > 0
        True
    """

    has_accuracy: ClassVar[bool] = False

    def __init__(self, spec: TaskSpec, data: Any = None, settings: dict[str, Any] | None = None):
        self.spec = spec
        self.data = data
        self.settings = dict(settings or {})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls,
            lambda t: (
                ((jax.tree_util.GetAttrKey("data"), t.data),
                 (jax.tree_util.GetAttrKey("settings"), t.settings)),
                t.spec,
            ),
            lambda spec, children: cls(spec, *children),
            flatten_func=lambda t: ((t.data, t.settings), t.spec),
        )

    # --- what subclasses define -------------------------------------------------------------

    @abc.abstractmethod
    def init(self, key: jax.Array) -> Params:
        """Returns freshly initialised params drawn with ``key``."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch) -> jax.Array:
        """Returns the scalar training objective of ``params`` on ``batch``."""

    def metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        """Returns ``{"loss": ...}`` plus ``"accuracy"`` for classification tasks."""
        return {"loss": self.loss(params, batch)}

    def sample_batch(self, key: jax.Array, split: str = "train") -> Batch:
        """Draws one batch of ``spec.batch_size`` examples from ``split`` (inside jit is fine)."""
        if self.data is None:
            raise TypeError(f"{type(self).__name__} has no dataset (data=None): build it with a Dataset "
                            "or override sample_batch to generate its batches.")
        return self.data.sample(key, check_split(split), self.spec.batch_size)

    # --- conveniences -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The family name of this task."""
        return self.spec.family

    def num_params(self) -> int:
        """Number of scalar parameters (computed from shapes, no FLOPs)."""
        shapes = jax.eval_shape(self.init, jax.random.key(0))
        return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))

    def __repr__(self) -> str:
        settings = {k: (v.shape if getattr(v, "ndim", 0) else v) for k, v in self.settings.items()}
        return f"{type(self).__name__}(spec={self.spec}, settings={settings})"
