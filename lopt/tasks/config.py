"""Task configurations: immutable, hashable, JSON round-trippable mappings."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["TaskConfig"]


def _freeze(value: Any, where: str) -> Any:
    """Converts a JSON-like value to an immutable, hashable equivalent."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"TaskConfig: {where}={value} is not finite; configs hold finite numbers.")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return TaskConfig(value)
    raise TypeError(
        f"TaskConfig: {where} has type {type(value).__name__}; configs hold only "
        "bool, int, float, str, None, lists and mappings of those (so they can be saved as JSON)."
    )


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, TaskConfig):
        return {k: _thaw(v) for k, v in value.items()}
    return value


class TaskConfig(Mapping):
    """An immutable, hashable, JSON-serialisable description of one task.

    Every config names its family under the key ``"family"``; the rest of the keys are the
    family's own settings. Configs are what task families sample, what results files store, and
    what ``lopt.tasks.build`` turns back into a :class:`~lopt.tasks.Task`.

    Example:
        >>> cfg = TaskConfig({"family": "quadratic", "dim": 10, "noise": 0.0})
        >>> cfg["dim"]
        10
        >>> TaskConfig.from_json(cfg.to_json()) == cfg
        True
        >>> len({cfg, TaskConfig(dict(cfg))})  # hashable, equal by value
        1
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, Any] | None = None, **kwargs: Any):
        merged = dict(items or {}, **kwargs)
        for key in merged:
            if not isinstance(key, str):
                raise TypeError(f"TaskConfig: key {key!r} is not a string; use string keys.")
        self._items = {k: _freeze(v, k) for k, v in sorted(merged.items())}
        self._hash = hash(json.dumps(self.to_dict(), sort_keys=True))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TaskConfig):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self == TaskConfig(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"TaskConfig({self.to_json()})"

    def replace(self, **changes: Any) -> TaskConfig:
        """Returns a copy with some keys changed or added."""
        return TaskConfig(self.to_dict(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """Returns a plain (mutable) dict of lists and scalars."""
        return {k: _thaw(v) for k, v in self._items.items()}

    def to_json(self) -> str:
        """Returns a canonical JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TaskConfig:
        """Parses a JSON object into a config.

        Raises:
            ValueError: if the text is not a JSON object.
        """
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"TaskConfig.from_json: not valid JSON ({err}): {text[:200]!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"TaskConfig.from_json: expected a JSON object, got {text[:200]!r}.")
        return cls(value)
