"""Task families (distributions over task configs) and their registry."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from lopt.tasks.base import Task
from lopt.tasks.config import TaskConfig
from lopt.tasks.sampling import numpy_rng

__all__ = ["TaskFamily", "build", "get", "names", "register", "sample"]


class TaskFamily(abc.ABC):
    """A distribution over tasks: ``sample(key) -> cfg`` and ``build(cfg) -> Task``.

    Subclasses set ``name`` and ``description``, implement :meth:`defaults` (every config key
    with its default value), :meth:`sample_config` (draw a config from a numpy Generator) and
    :meth:`make_task` (a validated, complete config to a :class:`Task`). Sampling ranges are
    documented in :meth:`sampling_ranges`.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("mlp")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and cfg["family"] == "mlp"
        True
    """

    name: str = ""
    description: str = ""

    @abc.abstractmethod
    def defaults(self) -> dict[str, Any]:
        """Every config key (except ``family``) with its default value."""

    @abc.abstractmethod
    def sample_config(self, rng) -> dict[str, Any]:
        """Draws the sampled keys of a config from a numpy Generator."""

    @abc.abstractmethod
    def make_task(self, cfg: TaskConfig) -> Task:
        """Builds a task from a complete config (all keys present)."""

    def sampling_ranges(self) -> dict[str, str]:
        """Human-readable description of what :meth:`sample` draws, key by key."""
        return {}

    def validate(self, cfg: TaskConfig) -> None:
        """Raises ValueError for a config value outside what the family supports."""

    # --- the public protocol ---------------------------------------------------------------

    def sample(self, key: Any) -> TaskConfig:
        """Draws one config; deterministic for a given int seed or JAX key."""
        return self.complete(self.sample_config(numpy_rng(key)))

    def default_config(self) -> TaskConfig:
        """The family's default config."""
        return self.complete({})

    def complete(self, cfg: Mapping[str, Any]) -> TaskConfig:
        """Fills defaults into ``cfg`` and validates it.

        Raises:
            ValueError: unknown keys, a config of another family, or invalid values.
        """
        cfg = dict(cfg)
        family = cfg.pop("family", self.name)
        if family != self.name:
            raise ValueError(f"Config of family {family!r} given to family {self.name!r}.")
        defaults = self.defaults()
        unknown = sorted(set(cfg) - set(defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown config keys {unknown}; valid keys: {sorted(defaults)}.")
        full = TaskConfig({**defaults, **cfg, "family": self.name})
        self.validate(full)
        return full

    def build(self, cfg: Mapping[str, Any] | None = None) -> Task:
        """Builds the task described by ``cfg`` (missing keys take their defaults)."""
        return self.make_task(self.complete(cfg or {}))

    def __repr__(self) -> str:
        return f"<TaskFamily {self.name!r}>"


_REGISTRY: dict[str, TaskFamily] = {}


def register(family: TaskFamily) -> TaskFamily:
    """Adds a family to the registry under ``family.name`` (replacing any of that name)."""
    if not isinstance(family, TaskFamily):
        raise TypeError(f"register: expected a TaskFamily instance, got {type(family).__name__}.")
    _REGISTRY[family.name] = family
    return family


def names() -> tuple[str, ...]:
    """Names of all registered task families."""
    return tuple(sorted(_REGISTRY))


def get(name: str) -> TaskFamily:
    """Returns the registered family ``name``.

    Raises:
        ValueError: listing the valid names when ``name`` is unknown.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task family {name!r}; valid names: {', '.join(names())}.")
    return _REGISTRY[name]


def sample(name: str, key: Any) -> TaskConfig:
    """Draws a config of family ``name`` with ``key``."""
    return get(name).sample(key)


def build(cfg: Mapping[str, Any]) -> Task:
    """Builds a task from a config that names its ``family``.

    Example:
        >>> import lopt
        >>> lopt.tasks.build({"family": "quadratic", "dim": 3}).spec.dim
        3
    """
    if not isinstance(cfg, Mapping) or "family" not in cfg:
        raise ValueError(f"build: cfg must be a mapping with a 'family' key, got {cfg!r}.")
    return get(cfg["family"]).build(cfg)
