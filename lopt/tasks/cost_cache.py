"""Task costs kept on disk, so a mixture's catalogue is drawn in seconds the second time.

Drawing a mixture's catalogue (:meth:`lopt.tasks.Mixture.structures`) checks every candidate
structure against the budget: it builds the task and traces one training step to count its FLOPs,
~0.36 s a candidate on the 2-core CPU, and the ``taskset`` preset's 16 buckets draw 181 candidates
(~40 s of every set-up). The count depends only on the structure and on the code that builds and
counts it, so this module keeps ``(num_params, flops)`` per structure in a JSON file named by a
fingerprint of that code (lopt's task and FLOP-counting sources and the JAX version): a change to
either starts a new file, and a hit returns exactly what the count would, so a seed draws the same
catalogue with or without the cache. Measured step times (``Budget.max_seconds``) depend on the
machine and are never stored.

The file lives in ``$XDG_CACHE_HOME/lopt/task-costs`` (default ``~/.cache/lopt/...``); set
``LOPT_COST_CACHE=0`` to leave it alone, or ``LOPT_COST_CACHE=<folder>`` to keep it elsewhere. It
holds numbers only (JSON), written atomically; an unreadable file is ignored and rewritten.

Example:
    >>> from lopt.tasks.budget import Budget
    >>> from lopt.tasks.cost_cache import cached_cost
    >>> cost = cached_cost(Budget(max_params=100), {"family": "quadratic", "dim": 4}, "quadratic/4")
    >>> cost.num_params
    4
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from lopt.source_fingerprint import source_fingerprint
from lopt.tasks.budget import Budget, TaskCost

__all__ = ["COST_CACHE_ENV", "cache_file", "cached_cost"]

#: ``0`` turns the disk cache off; a folder keeps it there.
COST_CACHE_ENV = "LOPT_COST_CACHE"
_loaded: dict[str, dict[str, list]] = {}


def _fingerprint() -> str:
    """A digest of the code a cost depends on: lopt's task sources, its FLOP counter, JAX's version."""
    return source_fingerprint("tasks/**/*.py", "flops.py")


def cache_file() -> str | None:
    """The cache file this code and JAX version use, or ``None`` when ``LOPT_COST_CACHE=0``."""
    setting = os.environ.get(COST_CACHE_ENV, "")
    if setting == "0":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = setting or os.path.join(base, "lopt", "task-costs")
    return os.path.join(folder, f"costs-{_fingerprint()}.json")


def _entries(path: str) -> dict[str, list]:
    if path not in _loaded:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            _loaded[path] = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 2}
        except (OSError, ValueError, AttributeError):  # absent or unreadable: start afresh
            _loaded[path] = {}
    return _loaded[path]


def _write(path: str, entries: dict[str, list]) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except OSError:  # a read-only home: the cache only saves time
        pass


def cached_cost(budget: Budget, cfg: Mapping[str, Any], key: str) -> TaskCost:
    """``budget.cost(cfg)``, read from the disk cache under ``key`` when it was computed before.

    Args:
        budget: the budget the cost is checked against (decides what is computed).
        cfg: a task config.
        key: what identifies ``cfg``'s structure (e.g. :func:`lopt.tasks.mixture.structure_key`).

    Returns:
        The :class:`~lopt.tasks.budget.TaskCost`; ``step_seconds`` is measured, never cached.
    """
    path = cache_file()
    if path is None or budget.max_seconds is not None:
        return budget.cost(cfg)
    entries = _entries(path)
    hit = entries.get(key)
    if hit is not None and (hit[1] is not None or budget.max_flops is None):
        return TaskCost(num_params=int(hit[0]), flops=None if hit[1] is None else float(hit[1]))
    cost = budget.cost(cfg)
    entries[key] = [cost.num_params, cost.flops]
    _write(path, entries)
    return cost
