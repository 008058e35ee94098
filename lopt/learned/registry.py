"""Registry of learned optimizer architectures: ``names()`` and ``get(name, **config)``.

Example:
    >>> import lopt.learned
    >>> "mlp" in lopt.learned.names()
    True
    >>> lopt.learned.get("mlp", hidden_size=16).hidden_size
    16
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lopt.learned.base import LearnedOptimizer

__all__ = ["get", "names", "register"]

_REGISTRY: dict[str, type[LearnedOptimizer]] = {}


def register(cls: type[LearnedOptimizer]) -> type[LearnedOptimizer]:
    """Adds an architecture class under ``cls.name`` (usable as a decorator).

    Raises:
        TypeError: ``cls`` is not a :class:`LearnedOptimizer` subclass.
        ValueError: ``cls.name`` is empty or already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, LearnedOptimizer)):
        raise TypeError(f"register() takes a LearnedOptimizer subclass, got {cls!r}.")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`; set the class attribute `name`.")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(
            f"learned optimizer name {cls.name!r} is taken by {_REGISTRY[cls.name].__name__}."
        )
    _REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """Names of the registered architectures, sorted."""
    return tuple(sorted(_REGISTRY))


def get(name: str, **config: Any) -> LearnedOptimizer:
    """Builds the architecture ``name`` with configuration ``config``.

    Args:
        name: one of :func:`names`.
        **config: fields of the architecture's dataclass (JSON lists are accepted for
            tuple fields).

    Returns:
        The (frozen, hashable) learned optimizer.

    Raises:
        ValueError: unknown ``name``.
        TypeError: unknown config field (the message lists the valid ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown learned optimizer {name!r}; choose one of {names()}.")
    cls = _REGISTRY[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in config if k not in fields]
    if unknown:
        raise TypeError(
            f"learned optimizer {name!r} has no config field {unknown[0]!r}; its fields "
            f"are {fields}."
        )
    return cls(**config)
