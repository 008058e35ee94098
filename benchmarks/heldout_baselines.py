"""Adam's grid runs of the held-out benchmark, reused from an earlier run's results.

The Adam baselines of ``benchmarks/pretrained_heldout.py`` (16 learning rates x seeds per task)
do not depend on the candidate, and they are most of the benchmark's time: on a CPU the full
suite's grid takes about an hour, the candidate's runs a few minutes. ``--baselines FILE`` reads
them from FILE (a results JSON or a ``--partial`` file of the same benchmark) instead of training
them again, for every task FILE holds **at the same horizon, seed count and learning-rate grid,
measured on the same kind of device** (a GPU's and a CPU's Adam curves differ in float rounding);
any other task is trained as usual. Each task record carries ``adam_code``, a fingerprint of the
code Adam's runs went through (lopt's tasks and inner loop, and JAX's version). A record made by
other code is checked first: the grid is trained again for its first two evaluation intervals
(``pretrained_heldout.check_reused``), and the record is reused when every learning rate's curve
reproduces the stored one's first points (:func:`reproduces`, relative tolerance
:data:`REPRODUCE_RTOL`); otherwise the whole grid is trained again. One from before the fingerprint
existed is reused as it is. Each reused task records the file under ``adam_from``.

Example:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "earlier.json")
    >>> record = {"name": "losg_rosenbrock", "num_steps": 500, "device": "cpu", "eval_steps": [0, 500],
    ...           "initial_valid": 2.0, "initial_test": 2.0, "grid_final_valid": [1.0, 0.5],
    ...           "grid_final_test": [1.0, 0.5], "best_grid_test": 0.5, "per_task_index": 1,
    ...           "per_task_lr": 0.1, "default_index": 2,
    ...           "test_curves": {"candidate": [2.0, 0.1], "lr_0": [2.0, 1.0], "lr_1": [2.0, 0.5], "lr_2": [2.0, 0.9]}}
    >>> with open(path, "w") as f:
    ...     json.dump({"seeds": 1, "steps_scale": 0.05, "tasks": [record]}, f)
    >>> found = adam_baselines([path], seeds=1, steps_scale=0.05, grid=[0.01, 0.1])
    >>> sorted(found["losg_rosenbrock"]["test_curves"])   # the candidate's curve is not taken
    ['lr_0', 'lr_1', 'lr_2']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

#: The fields of a task record that come from Adam's runs alone.
ADAM_FIELDS = ("num_steps", "device", "eval_steps", "initial_valid", "initial_test", "grid_final_valid",
               "grid_final_test", "best_grid_test", "per_task_index", "per_task_lr", "default_index")


def _settings(document: dict[str, Any], path: str) -> tuple[Any, Any]:
    source = document.get("settings", document)  # a --partial file keeps them under "settings"
    if "seeds" not in source or "steps_scale" not in source or "tasks" not in document:
        raise ValueError(f"--baselines {path!r} is not a results or --partial file of "
                         "benchmarks/pretrained_heldout.py (no seeds, steps_scale or tasks).")
    return source["seeds"], source["steps_scale"]


def adam_baselines(paths: Sequence[str], *, seeds: int, steps_scale: float,
                   grid: Sequence[float]) -> dict[str, dict[str, Any]]:
    """The Adam part of every usable task record in ``paths`` (the first file wins a name).

    Args:
        paths: results JSON or ``--partial`` files of the held-out benchmark.
        seeds, steps_scale: this run's; a file made with others is refused.
        grid: this run's learning-rate grid; a record with another grid is refused.

    Returns:
        ``{task name: {ADAM_FIELDS..., "test_curves": {"lr_i": ...}, "adam_code": fingerprint or None,
        "adam_from": path}}``.

    Raises:
        ValueError: a file that is not the benchmark's, or was made with other seeds, horizon
            scale or grid (the message names the file and the value that differs).
    """
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        with open(path) as f:
            document = json.load(f)
        file_seeds, file_scale = _settings(document, path)
        if file_seeds != seeds or not math.isclose(file_scale, steps_scale):
            raise ValueError(f"--baselines {path!r} was measured with --seeds {file_seeds} --steps-scale "
                             f"{file_scale}; this run uses --seeds {seeds} --steps-scale {steps_scale}.")
        if "grid" in document and not _same_grid(document["grid"], grid):
            raise ValueError(f"--baselines {path!r} used another learning-rate grid ({document['grid']}).")
        for task in document["tasks"]:
            missing = [k for k in ADAM_FIELDS if k not in task]
            if missing:
                raise ValueError(f"--baselines {path!r}: task {task.get('name')!r} lacks {missing}.")
            if len(task["grid_final_valid"]) != len(grid) or not math.isclose(
                    task["per_task_lr"], grid[task["per_task_index"]], rel_tol=1e-5):
                raise ValueError(f"--baselines {path!r}: task {task['name']!r} used another learning-rate grid.")
            if task["name"] not in found:
                curves = {k: v for k, v in task["test_curves"].items() if k.startswith("lr_")}
                found[task["name"]] = {**{k: task[k] for k in ADAM_FIELDS}, "test_curves": curves,
                                       "adam_code": task.get("adam_code"), "adam_from": path}
    return found


#: Largest relative difference between a stored and a fresh Adam curve that still counts as the same
#: runs. The same program on the same machine gives the same bits; this leaves room for another CPU's
#: instructions, and is 20x below what reordering the sums already does after 50 steps
#: (2e-4 on ``conv_fc_fashion28``).
REPRODUCE_RTOL = 1e-5


def reproduces(stored: Sequence[float], fresh: Sequence[float], *, rtol: float = REPRODUCE_RTOL) -> tuple[bool, float]:
    """Whether a fresh learning curve reproduces a stored one, and their largest relative difference.

    Args:
        stored: the curve read from ``--baselines`` (mean test loss at each evaluation).
        fresh: the same runs made by this code.
        rtol: the tolerance on ``|fresh - stored| / max(|stored|, 1e-12)`` at every evaluation.

    Returns:
        ``(same, difference)``; curves of other lengths, or with a non-finite point where the other
        has a finite one, are not the same (difference ``inf``).

    Example:
        >>> same, difference = reproduces([2.0, 1.0, 0.5], [2.0, 1.000001, 0.5])
        >>> same, round(difference, 9)
        (True, 1e-06)
        >>> reproduces([2.0, 1.0], [2.0, 1.1])[0]
        False
    """
    if len(stored) != len(fresh):
        return False, math.inf
    worst = 0.0
    for a, b in zip(stored, fresh):
        if not (math.isfinite(a) and math.isfinite(b)):
            if math.isfinite(a) or math.isfinite(b):
                return False, math.inf
            continue
        worst = max(worst, abs(b - a) / max(abs(a), 1e-12))
    return worst <= rtol, worst


def adam_code() -> str:
    """The fingerprint of the code Adam's grid runs go through (:func:`lopt.source_fingerprint.source_fingerprint`)."""
    from lopt.source_fingerprint import source_fingerprint

    return source_fingerprint("tasks/**/*.py", "inner/**/*.py")


def _same_grid(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a, b))
