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

**Shipped costs.** lopt ships the costs of every candidate the ``taskset`` preset's default
catalogue (seed 0) draws, in ``lopt/tasks/data/task_costs.json`` (:data:`SHIPPED_COSTS`, written by
``python scripts/ship_task_costs.py``), so a fresh machine draws that catalogue without counting:
the 16 x 8 ``taskset`` set-up spent 19.4 s of its 86.7 on an H100 counting 287 of them (stop 48).
They are read under the disk cache, only while their fingerprint (:func:`shipped_fingerprint`: the
same sources, without JAX's version) matches the code; the tests recount a sample of them under the
installed JAX, so a change to the tasks or a JAX release that changes a count is caught there.
Set ``LOPT_COST_CACHE=0`` to use neither.

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

import functools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from lopt.source_fingerprint import source_fingerprint
from lopt.tasks.budget import Budget, TaskCost
from lopt.tasks.cost_workers import CostWorkers, estimate_costs, worker_count

__all__ = ["COST_CACHE_ENV", "SHIPPED_COSTS", "SHIPPED_FORMAT", "cache_file", "cached_cost", "check_shipped_costs", "prefetch_costs",
           "shipped_costs", "shipped_fingerprint"]

#: ``0`` turns the disk cache off; a folder keeps it there.
COST_CACHE_ENV = "LOPT_COST_CACHE"
_loaded: dict[str, dict[str, list]] = {}
_memory: dict[str, list] = {}  # the costs of this process, when the disk cache is off


#: The costs shipped with lopt (see the module docs).
SHIPPED_COSTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "task_costs.json")
#: The ``format`` field of the shipped file (scripts/ship_task_costs.py writes it).
SHIPPED_FORMAT = "lopt.task_costs"
# the sources that draw candidates and move costs around: they decide no count and no key
_NOT_COST_CODE = ("tasks/catalogue.py", "tasks/cost_cache.py", "tasks/cost_workers.py")


def _fingerprint() -> str:
    """A digest of the code a cost depends on: lopt's task sources, its FLOP counter, JAX's version."""
    return source_fingerprint("tasks/**/*.py", "flops.py")


def shipped_fingerprint() -> str:
    """The fingerprint the shipped costs must carry to be read: lopt's task sources and FLOP counter
    (without the modules that only draw candidates and cache their costs), not JAX's version."""
    return source_fingerprint("tasks/**/*.py", "flops.py", exclude=_NOT_COST_CODE, jax_version=False)


@functools.cache
def _shipped_file(path: str) -> tuple[str | None, dict[str, list], dict[str, dict]]:
    """``(fingerprint, costs, configs)`` of a shipped-costs file; ``(None, {}, {})`` if absent or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        costs = {k: v for k, v in data["costs"].items() if isinstance(v, list) and len(v) == 2}
        configs = {k: v for k, v in data["configs"].items() if isinstance(v, dict)}
        return (data["code"] if data.get("format") == SHIPPED_FORMAT else None), costs, configs
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, {}, {}


def shipped_costs() -> dict[str, list]:
    """The shipped costs (``{structure key: [num_params, flops]}``), or ``{}`` when their
    fingerprint does not match this code (``python scripts/ship_task_costs.py`` writes them anew)."""
    code, costs, _ = _shipped_file(SHIPPED_COSTS)
    return costs if code == shipped_fingerprint() else {}


def shipped_sample(per_family: int = 1) -> list[str]:
    """Keys of the ``per_family`` smallest shipped structures (by parameters) of every family: a
    quick :func:`check_shipped_costs` that still runs every family's code.

    Example:
        >>> from lopt.tasks.cost_cache import shipped_sample
        >>> len(shipped_sample())  # the 12 taskset families
        12
    """
    from lopt.tasks.mixture import base_family

    _, costs, configs = _shipped_file(SHIPPED_COSTS)
    chosen: dict[str, list[str]] = {}
    for key in sorted(configs, key=lambda k: (costs[k][0], k)):
        family = chosen.setdefault(base_family(configs[key]), [])
        if len(family) < per_family:
            family.append(key)
    return [key for keys in chosen.values() for key in keys]


def check_shipped_costs(keys: Sequence[str] | None = None) -> dict[str, str]:
    """Counts shipped costs again from their stored configs, under this code and the installed JAX.

    Args:
        keys: which entries (default: all of them).

    Returns:
        ``{key: what differs}`` for every entry whose count or structure key differs (empty: all agree).

    Raises:
        ValueError: the shipped file is missing, or its fingerprint does not match this code.

    Example:
        >>> from lopt.tasks.cost_cache import check_shipped_costs, shipped_sample
        >>> check_shipped_costs(shipped_sample()[:1])
        {}
    """
    from lopt.tasks.budget import estimate_cost
    from lopt.tasks.mixture import structure_key

    code, costs, configs = _shipped_file(SHIPPED_COSTS)
    if code != shipped_fingerprint():
        raise ValueError(f"check_shipped_costs: {SHIPPED_COSTS} is missing or was written for other code (its "
                         f"fingerprint {code}, this code's {shipped_fingerprint()}); run "
                         "`python scripts/ship_task_costs.py --force`.")
    differences = {}
    for key in costs if keys is None else keys:
        if key not in costs or key not in configs:
            raise ValueError(f"check_shipped_costs: no shipped cost under {key!r}; pass keys of shipped_costs().")
        cfg = configs[key]
        counted = estimate_cost(cfg, flops=True)
        if structure_key(cfg) != key:
            differences[key] = f"its config's structure key is now {structure_key(cfg)}"
        elif [counted.num_params, counted.flops] != costs[key]:
            differences[key] = f"counted {[counted.num_params, counted.flops]}, shipped {costs[key]}"
    return differences


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
    if hit is None and entries is not _memory:
        hit = shipped_costs().get(key)
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
