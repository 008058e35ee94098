"""Task costs estimated in parallel worker processes, for drawing a mixture's catalogue.

Drawing the ``taskset`` catalogue checks ~180 candidate structures against the budget; each check
builds the task and traces one training step to count its FLOPs (0.27 s on the 2-core CPU, and
~50 s of a cold GPU session's set-up, where the host has 16 idle cores). The checks are
independent and pure (a config in, two numbers out), so this module runs them in worker
processes: plain ``python -m lopt.tasks.cost_workers`` subprocesses speaking JSON lines, on JAX's
CPU backend whatever the parent uses (they never touch the accelerator), each taking the next
candidate when it is free, so a slow one does not hold up the rest. A worker keeps to the data it
has loaded: candidates are grouped by what their task loads (:func:`data_key`: the dataset and
image size, or the corpus and vocabulary), and a free worker takes one of its own groups before
opening a new one (loading a dataset variant costs 1-9 s against ~0.2 s per candidate, and with
one shared queue every worker loaded every variant).

Subprocesses rather than :mod:`multiprocessing`: a spawned ``multiprocessing`` worker re-imports
the user's main script, which fails for a script without an ``if __name__ == "__main__"`` guard,
and forking a process that has started JAX's threads is unsafe.

A FLOP count is the same on every backend (it is read off the traced program), so a worker's
answer is exactly what the parent would have computed; a candidate a worker cannot estimate
(its error, or a worker that died) is left to the parent, which then raises the real error
itself. Measured step times (``Budget.max_seconds``) depend on the device and are never
estimated here.

``LOPT_COST_WORKERS`` sets the number of workers (``0`` or ``1``: none, everything in-process);
the default is one per CPU core, at most 16, on a machine of at least 8 cores, and none below
that: each worker imports JAX and loads the datasets again, so on 2 cores one process is faster.

Example:
    >>> from lopt.tasks.budget import Budget
    >>> from lopt.tasks.cost_workers import estimate_costs
    >>> costs = estimate_costs(Budget(max_params=100), [{"family": "quadratic", "dim": 3}], workers=1)
    >>> costs[0].num_params
    3
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self

from lopt.env_settings import parse_count
from lopt.tasks.budget import Budget, TaskCost
from lopt.tasks.config import TaskConfig

__all__ = ["WORKERS_ENV", "CostWorkers", "data_key", "estimate_costs", "worker_count"]

#: Number of worker processes (``0``/``1``: estimate in-process).
WORKERS_ENV = "LOPT_COST_WORKERS"
_MAX_DEFAULT_WORKERS = 16
# A worker re-imports JAX and re-loads datasets, and a parallel draw estimates ~1.5x the candidates
# of a serial one (it draws ahead): on the 2-core CPU, 2 workers took 54 s where one process took 27 s.
_MIN_CORES = 8


def worker_count() -> int:
    """Worker processes to use: ``$LOPT_COST_WORKERS``, else one per CPU core (at most 16) on a
    machine with at least 8 cores, and none on a smaller one."""
    setting = os.environ.get(WORKERS_ENV, "").strip()
    if not setting:
        cores = os.cpu_count() or 1
        return min(_MAX_DEFAULT_WORKERS, cores) if cores >= _MIN_CORES else 0
    return parse_count(WORKERS_ENV, setting, minimum=0,
                       expected="a non-negative integer (0 or 1: no worker processes)")


#: Task settings that decide what data a task loads (and a worker then keeps in memory).
_DATA_SETTINGS = ("dataset", "image_size", "corpus", "vocab_size", "level")


def data_key(cfg: Mapping[str, Any]) -> str:
    """What a config's task loads: configs with equal keys share the data a worker has loaded.

    The dataset settings of the innermost task (a wrapper such as ``augmented`` holds its task
    under ``"task"``); a task without any (a synthetic problem) is keyed by its family.

    Example:
        >>> data_key({"family": "augmented", "task": {"family": "mlp", "dataset": "digits", "image_size": 8}})
        '["digits", 8]'
        >>> data_key({"family": "quadratic", "dim": 4})
        '"quadratic"'
    """
    while isinstance(cfg.get("task"), Mapping):
        cfg = cfg["task"]
    settings = [cfg[name] for name in _DATA_SETTINGS if name in cfg]
    return json.dumps(settings if settings else cfg.get("family"), default=str)


class _WorkList:
    """Pending requests grouped by :func:`data_key`, handed out so each worker keeps to its groups.

    A free worker takes from a group it already holds; else it opens the group held by the fewest
    workers (the largest first among equals), so the groups spread over the workers before any is
    shared, and a worker whose groups ran dry helps with the others'.
    """

    def __init__(self, items: Sequence[dict]):
        self._lock = threading.Lock()
        self._groups: dict[str, list[dict]] = {}
        for item in items:
            self._groups.setdefault(data_key(item["config"]), []).append(item)
        self._holders: dict[str, int] = dict.fromkeys(self._groups, 0)

    def take(self, held: set[str]) -> dict | None:
        """The next request for a worker holding the groups ``held`` (updated); ``None`` when done."""
        with self._lock:
            open_groups = [key for key, items in self._groups.items() if items]
            if not open_groups:
                return None
            own = [key for key in open_groups if key in held]
            if own:
                key = own[0]
            else:
                key = min(open_groups, key=lambda k: (self._holders[k], -len(self._groups[k])))
                self._holders[key] += 1
                held.add(key)
            return self._groups[key].pop(0)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _check_budget(budget: Budget) -> None:
    if budget.max_seconds is not None:
        raise ValueError("estimate_costs: the budget bounds measured step seconds (max_seconds), which depend on "
                         "the device; estimate them in the process that runs the tasks (Budget.cost).")


class CostWorkers:
    """Worker processes that estimate task costs, started on first use; a context manager.

    One pool serves several batches (a catalogue is drawn in rounds): the workers keep their
    imports, loaded datasets and traced functions between batches.

    Args:
        count: number of worker processes (at least 2).

    Example:
        >>> from lopt.tasks.budget import Budget
        >>> with CostWorkers(2) as workers:  # doctest: +SKIP
        ...     workers.estimate(Budget(max_params=10), [{"family": "quadratic", "dim": 3}])
        [TaskCost(num_params=3, flops=None, step_seconds=None)]
    """

    def __init__(self, count: int):
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise ValueError(f"CostWorkers: count={count!r} must be an integer >= 2 (estimate in-process otherwise).")
        self.count = count
        self._processes: list[subprocess.Popen] = []
        self._held: list[set[str]] = []  # per worker: the data groups it has loaded

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        env = _worker_env()
        while len(self._processes) < self.count:
            self._processes.append(subprocess.Popen(
                [sys.executable, "-m", "lopt.tasks.cost_workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, env=env))
            self._held.append(set())

    def estimate(self, budget: Budget, configs: Sequence[Mapping[str, Any]]) -> list[TaskCost | None]:
        """``budget.cost(cfg)`` per config; ``None`` where no worker could estimate it."""
        _check_budget(budget)
        if not self._processes:
            self._start()
        flops = budget.max_flops is not None
        work = _WorkList([{"index": index, "flops": flops, "config": TaskConfig(cfg).to_dict()}
                          for index, cfg in enumerate(configs)])
        results: list[TaskCost | None] = [None] * len(configs)
        threads = [threading.Thread(target=_serve, args=(p, held, work, results), daemon=True)
                   for p, held in zip(self._processes, self._held) if p.poll() is None]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def close(self) -> None:
        """Ends the workers (each exits when its input closes)."""
        for process in self._processes:
            try:
                process.stdin.close()
            except OSError:
                pass
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        self._processes, self._held = [], []


def _serve(process: subprocess.Popen, held: set[str], work: _WorkList, results: list) -> None:
    """Feeds ``process`` one item at a time until the work list is empty or the worker fails."""
    try:
        while True:
            item = work.take(held)
            if item is None:
                return
            process.stdin.write(json.dumps(item) + "\n")
            process.stdin.flush()
            line = process.stdout.readline()
            if not line:  # the worker died: the rest go to the others, or stay with the caller
                return
            answer = json.loads(line)
            if "error" not in answer:
                results[answer["index"]] = TaskCost(num_params=int(answer["num_params"]),
                                                    flops=None if answer["flops"] is None else float(answer["flops"]))
    except (OSError, ValueError):
        return


def estimate_costs(budget: Budget, configs: Sequence[Mapping[str, Any]], *,
                   workers: int | None = None) -> list[TaskCost | None]:
    """``budget.cost(cfg)`` for every config, spread over worker processes started for this call.

    Args:
        budget: decides what is estimated (FLOPs only if it bounds them); it must not bound
            measured seconds, which are only meaningful on the caller's device.
        configs: task configs (JSON-serialisable mappings).
        workers: number of processes (default :func:`worker_count`); ``0`` or ``1`` estimates
            in this process, as does a list shorter than two items.

    Returns:
        One :class:`~lopt.tasks.budget.TaskCost` per config, ``None`` where no worker could
        estimate it (estimate it in-process to see why).
    """
    _check_budget(budget)
    workers = worker_count() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"estimate_costs: workers={workers!r} must be a non-negative integer.")
    workers = min(workers, len(configs))
    if workers <= 1:
        return [budget.cost(cfg) for cfg in configs]
    with CostWorkers(workers) as pool:
        return pool.estimate(budget, configs)


def _worker_main() -> None:
    """A worker: reads one request per line (index, flops, config); answers one line each."""
    answers, sys.stdout = sys.stdout, sys.stderr  # nothing but answers goes to the parent's pipe
    from lopt.tasks.budget import estimate_cost

    for line in sys.stdin:
        item = json.loads(line)
        try:
            cost = estimate_cost(item["config"], flops=bool(item["flops"]))
            answer = {"index": item["index"], "num_params": cost.num_params, "flops": cost.flops}
        except Exception as error:  # noqa: BLE001 - reported; the parent estimates it and raises the real error
            answer = {"index": item["index"], "error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    _worker_main()
