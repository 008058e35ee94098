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

:func:`prefetch_costs` fills the cache for many candidates at once in worker processes
(:mod:`lopt.tasks.cost_workers`): how a mixture draws its catalogue on a machine with idle cores.

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
from collections.abc import Mapping, Sequence
from typing import Any

from lopt.source_fingerprint import source_fingerprint
from lopt.tasks.budget import Budget, TaskCost
from lopt.tasks.cost_workers import CostWorkers, estimate_costs, worker_count

__all__ = ["COST_CACHE_ENV", "cache_file", "cached_cost", "prefetch_costs"]

#: ``0`` turns the disk cache off; a folder keeps it there.
COST_CACHE_ENV = "LOPT_COST_CACHE"
_loaded: dict[str, dict[str, list]] = {}
_memory: dict[str, list] = {}  # the costs of this process, when the disk cache is off


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


def _store(path: str | None) -> dict[str, list]:
    """The entries of the disk cache at ``path``, or this process's memory when it is off."""
    return _memory if path is None else _entries(path)


def _hit(entries: dict[str, list], budget: Budget, key: str) -> TaskCost | None:
    hit = entries.get(key)
    if hit is not None and (hit[1] is not None or budget.max_flops is None):
        return TaskCost(num_params=int(hit[0]), flops=None if hit[1] is None else float(hit[1]))
    return None


def cached_cost(budget: Budget, cfg: Mapping[str, Any], key: str) -> TaskCost:
    """``budget.cost(cfg)``, read from the cache under ``key`` when it was computed before.

    With the disk cache off (``LOPT_COST_CACHE=0``) costs are remembered in memory only, for
    this process.

    Args:
        budget: the budget the cost is checked against (decides what is computed).
        cfg: a task config.
        key: what identifies ``cfg``'s structure (e.g. :func:`lopt.tasks.mixture.structure_key`).

    Returns:
        The :class:`~lopt.tasks.budget.TaskCost`; ``step_seconds`` is measured, never cached.
    """
    if budget.max_seconds is not None:
        return budget.cost(cfg)
    path = cache_file()
    entries = _store(path)
    cost = _hit(entries, budget, key)
    if cost is None:
        cost = budget.cost(cfg)
        entries[key] = [cost.num_params, cost.flops]
        if path is not None:
            _write(path, entries)
    return cost


def prefetch_costs(budget: Budget, items: Sequence[tuple[Mapping[str, Any], str]], *,
                   workers: CostWorkers | int | None = None, min_batch: int = 8) -> int:
    """Estimates the uncached costs among ``items`` in worker processes and caches them.

    Afterwards :func:`cached_cost` answers those keys without counting. Nothing is done for a
    budget that bounds measured seconds, or for fewer than ``min_batch`` missing keys (starting
    the workers costs a few seconds); a candidate no worker could estimate stays uncached.

    Args:
        budget: the budget the costs are checked against.
        items: ``(config, key)`` pairs, as :func:`cached_cost` takes them.
        workers: a running :class:`~lopt.tasks.cost_workers.CostWorkers` pool, or how many
            processes to start for this call (default :func:`lopt.tasks.cost_workers.worker_count`).
        min_batch: the fewest missing keys worth starting workers for.

    Returns:
        How many costs the workers added to the cache.
    """
    if budget.max_seconds is not None:
        return 0
    path = cache_file()
    entries = _store(path)
    missing: dict[str, Mapping[str, Any]] = {}
    for cfg, key in items:
        if key not in missing and _hit(entries, budget, key) is None:
            missing[key] = cfg
    workers = worker_count() if workers is None else workers
    if len(missing) < max(2, min_batch) or (isinstance(workers, int) and workers <= 1):
        return 0
    configs = list(missing.values())
    costs = (workers.estimate(budget, configs) if isinstance(workers, CostWorkers)
             else estimate_costs(budget, configs, workers=workers))
    added = 0
    for key, cost in zip(missing, costs):
        if cost is not None:
            entries[key] = [cost.num_params, cost.flops]
            added += 1
    if added and path is not None:
        _write(path, entries)
    return added
