"""Evaluation suites: named, seeded, reproducible sets of tasks with their training budget.

=============  ===========================================================================
suite          tasks
=============  ===========================================================================
iid            fresh samples of the training family (default ``mlp``), capped to small
               sizes unless ``full_size``
ood_width      one-hidden-layer MLPs on 8x8 Fashion-MNIST, hidden width log-spaced 1..1,000
ood_batch      an MLP (32 hidden) on 8x8 Fashion-MNIST, batch size log-spaced 1..10,000
               (capped at the training split's size)
ood_dataset    the same MLP on other datasets and resolutions (digits, synthetic, 16/28 px)
ood_family     other families: conv_pooling, conv_fc, quadratics
ood            ``ood_width`` and ``ood_batch`` together (the paper's controlled study)
quick          two tiny tasks for tests and smoke runs
=============  ===========================================================================

The ``ood_*`` sweeps follow the controlled out-of-distribution study of Metz et al. 2020
(arXiv 2009.11243, section 5): one property of a task moves far outside the training
distribution while the rest stays put. A suite also fixes the horizon, the seeds and the
evaluation schedule, and the *tuning tasks* on which ``*_global`` baselines choose their one
setting: fresh samples of the training family (for ``iid``: none, and each task's global
setting is chosen on the suite's *other* tasks, themselves samples of the training family).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

import lopt.tasks
from lopt.tasks.config import TaskConfig

__all__ = ["Suite", "SuiteTask", "make_suite", "suite_names", "task_label"]

#: Small-size caps applied to sampled configs unless ``full_size=True`` (cheap on a CPU).
SMALL_CAPS = {"image_size": 8, "batch_size": 128, "width": 64, "channels": 32, "dim": 100}
#: Evaluation batches are raised so each evaluation sees at least this many examples.
EVAL_EXAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """One task of a suite.

    Attributes:
        config: the task's config (what :func:`lopt.tasks.build` takes).
        label: a short human-readable description for tables and plots.
        sweep: ``(variable, value)`` for sweep suites (e.g. ``("hidden width", 32)``), else None.
        eval_batches: batches averaged per evaluation and split.
    """

    config: TaskConfig
    label: str
    sweep: tuple[str, float] | None = None
    eval_batches: int = 8

    @property
    def id(self) -> str:
        """A stable id derived from the config: ``"<family>-<10 hex digits>"``."""
        digest = hashlib.sha1(self.config.to_json().encode()).hexdigest()[:10]
        return f"{self.config['family']}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for results headers)."""
        return {"id": self.id, "label": self.label, "config": self.config.to_dict(),
                "sweep": list(self.sweep) if self.sweep else None, "eval_batches": self.eval_batches}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuiteTask:
        """Inverse of :meth:`to_dict`."""
        sweep = tuple(data["sweep"]) if data.get("sweep") else None
        return cls(TaskConfig(data["config"]), data["label"], sweep, int(data["eval_batches"]))


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named set of tasks with a horizon, seeds, an evaluation schedule and tuning tasks.

    Attributes:
        name: the suite's name.
        tasks: the tasks reported on.
        tuning_tasks: where ``*_global`` baselines choose their setting; empty means each
            task's setting is chosen on the suite's other tasks (leave-one-out).
        num_steps: the horizon (inner steps per run).
        num_seeds: seeds per run (seed ``s`` gives every optimizer the same initial params).
        eval_every: valid/test are evaluated every this many steps (and at 0 and the end).
        options: the arguments the suite was made with (recorded in results headers).
    """

    name: str
    tasks: tuple[SuiteTask, ...]
    tuning_tasks: tuple[SuiteTask, ...]
    num_steps: int
    num_seeds: int
    eval_every: int
    options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for results headers); :meth:`from_dict` inverts it."""
        return {"name": self.name, "num_steps": self.num_steps, "num_seeds": self.num_seeds,
                "eval_every": self.eval_every, "options": dict(self.options),
                "tasks": [t.to_dict() for t in self.tasks],
                "tuning_tasks": [t.to_dict() for t in self.tuning_tasks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suite:
        """Inverse of :meth:`to_dict`."""
        return cls(data["name"], tuple(SuiteTask.from_dict(t) for t in data["tasks"]),
                   tuple(SuiteTask.from_dict(t) for t in data["tuning_tasks"]), int(data["num_steps"]),
                   int(data["num_seeds"]), int(data["eval_every"]), tuple(sorted(data["options"].items())))

    def sweep_variables(self) -> list[str]:
        """The swept variables of the suite's tasks, in order of appearance."""
        seen: list[str] = []
        for task in self.tasks:
            if task.sweep and task.sweep[0] not in seen:
                seen.append(task.sweep[0])
        return seen


# -- labels ------------------------------------------------------------------------------

_SHORT_DATASETS = {"fashion_mnist": "fmnist", "digits": "digits", "synthetic": "synth"}


def task_label(cfg: Mapping[str, Any]) -> str:
    """A short description of a task config, e.g. ``"mlp[64-32] relu fmnist 8px bs128"``.

    Args:
        cfg: a complete task config (or any mapping with a ``family`` key).

    Returns:
        The family, then its most telling settings.

    Example:
        >>> task_label({"family": "quadratic", "dim": 10, "condition_number": 100.0, "noise": 0.0})
        'quadratic d10 cond100'
    """
    family = cfg.get("family", "?")
    parts = [family]
    if "hidden_sizes" in cfg and family == "mlp":
        parts[0] += "[" + "-".join(str(w) for w in cfg["hidden_sizes"]) + "]"
    if "channels" in cfg:
        parts[0] += " ch[" + "-".join(str(w) for w in cfg["channels"]) + "]"
        if cfg.get("hidden_sizes"):
            parts[0] += " fc[" + "-".join(str(w) for w in cfg["hidden_sizes"]) + "]"
    if "activation" in cfg:
        parts.append(str(cfg["activation"]))
    if "dataset" in cfg:
        parts.append(f"{_SHORT_DATASETS.get(cfg['dataset'], cfg['dataset'])} {cfg.get('image_size', '?')}px")
    if "batch_size" in cfg:
        parts.append(f"bs{cfg['batch_size']}")
    if cfg.get("init_scale", 1.0) != 1.0:
        parts.append(f"init{cfg['init_scale']:.3g}")
    if family == "quadratic":
        parts.append(f"d{cfg.get('dim')}")
        parts.append(f"cond{cfg.get('condition_number', 0):g}")
        if cfg.get("noise"):
            parts.append(f"noise{cfg['noise']:g}")
    return " ".join(parts)


# -- helpers -----------------------------------------------------------------------------


def _eval_batches(cfg: Mapping[str, Any], minimum: int) -> int:
    batch = cfg.get("batch_size")
    if not isinstance(batch, int) or batch < 1:
        return minimum
    examples = EVAL_EXAMPLES if minimum >= 8 else 64  # the quick suites use fewer
    return max(minimum, math.ceil(examples / batch))


def _task(cfg: Mapping[str, Any], sweep: tuple[str, float] | None = None, *, eval_batches: int) -> SuiteTask:
    full = lopt.tasks.get(cfg["family"]).complete(cfg)
    return SuiteTask(full, task_label(full), sweep, _eval_batches(full, eval_batches))


def _cap(cfg: TaskConfig) -> dict[str, Any]:
    capped = cfg.to_dict()
    if "image_size" in capped:
        capped["image_size"] = min(capped["image_size"], SMALL_CAPS["image_size"])
    if "batch_size" in capped and capped["family"] != "quadratic":
        capped["batch_size"] = min(capped["batch_size"], SMALL_CAPS["batch_size"])
    if "hidden_sizes" in capped:
        capped["hidden_sizes"] = [min(w, SMALL_CAPS["width"]) for w in capped["hidden_sizes"]]
    if "channels" in capped:
        capped["channels"] = [min(w, SMALL_CAPS["channels"]) for w in capped["channels"]]
    if "dim" in capped:
        capped["dim"] = min(capped["dim"], SMALL_CAPS["dim"])
    return capped


def _samples(family: str, count: int, *, seed: int, stream: int, full_size: bool, eval_batches: int
             ) -> tuple[SuiteTask, ...]:
    """``count`` distinct samples of ``family`` (capped to small sizes unless ``full_size``)."""
    fam = lopt.tasks.get(family)
    base = jax.random.fold_in(jax.random.key(seed), stream)
    tasks: list[SuiteTask] = []
    seen = set()
    draw = 0
    while len(tasks) < count:
        if draw > 100 * count + 100:
            raise ValueError(f"could not draw {count} distinct valid {family!r} tasks; ask for fewer.")
        cfg = fam.sample(jax.random.fold_in(base, draw))
        draw += 1
        if not full_size:
            try:
                cfg = fam.complete(_cap(cfg))
            except ValueError:  # e.g. a conv stack that no longer fits the smaller image
                continue
        if cfg in seen:
            continue
        seen.add(cfg)
        tasks.append(_task(cfg, eval_batches=eval_batches))
    return tuple(tasks)


def _log_spaced_ints(low: int, high: int, count: int) -> list[int]:
    return sorted({round(float(v)) for v in np.geomspace(low, high, count)})


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


# -- the suites --------------------------------------------------------------------------

_MLP_BASE = {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
             "batch_size": 128, "activation": "relu"}
_QUICK_BASE = {"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [16],
               "batch_size": 32, "activation": "relu"}


def _iid(o: dict[str, Any]) -> list[SuiteTask]:
    return list(_samples(o["family"], o["num_tasks"], seed=o["seed"], stream=0, full_size=o["full_size"],
                         eval_batches=o["eval_batches"]))


def _width_tasks(o: dict[str, Any], count: int) -> list[SuiteTask]:
    base = _QUICK_BASE if o["quick"] else _MLP_BASE
    high = 100 if o["quick"] else 1000
    return [_task({**base, "hidden_sizes": [w]}, ("hidden width", w), eval_batches=o["eval_batches"])
            for w in _log_spaced_ints(1, high, count)]


def _batch_tasks(o: dict[str, Any], count: int) -> list[SuiteTask]:
    base = _QUICK_BASE if o["quick"] else _MLP_BASE
    data = lopt.tasks.datasets.load(base["dataset"], base["image_size"])
    high = min(256 if o["quick"] else 10_000, data.info.size("train"))
    return [_task({**base, "batch_size": b}, ("batch size", b), eval_batches=o["eval_batches"])
            for b in _log_spaced_ints(1, high, count)]


def _ood_width(o):
    return _width_tasks(o, o["num_tasks"])


def _ood_batch(o):
    return _batch_tasks(o, o["num_tasks"])


def _ood(o):
    widths = max(2, math.ceil(o["num_tasks"] / 2))
    return _width_tasks(o, widths) + _batch_tasks(o, max(2, o["num_tasks"] - widths))


def _ood_dataset(o):
    base = _QUICK_BASE if o["quick"] else _MLP_BASE
    variants = [("digits", 8), ("synthetic", 8), ("fashion_mnist", 16), ("fashion_mnist", 28), ("digits", 16)]
    variants = [v for v in variants if (v[0], v[1]) != (base["dataset"], base["image_size"])]
    return [_task({**base, "dataset": d, "image_size": s}, eval_batches=o["eval_batches"])
            for d, s in variants[:o["num_tasks"]]]


def _ood_family(o):
    configs = [
        {"family": "conv_pooling", "image_size": 8 if o["quick"] else 16,
         "dataset": "digits" if o["quick"] else "fashion_mnist", "batch_size": 32 if o["quick"] else 128},
        {"family": "conv_fc", "image_size": 8 if o["quick"] else 16,
         "dataset": "digits" if o["quick"] else "fashion_mnist", "batch_size": 32 if o["quick"] else 128},
        {"family": "quadratic", "dim": 10, "condition_number": 10.0},
        {"family": "quadratic", "dim": 100, "condition_number": 1000.0, "noise": 0.1, "seed": 1},
    ]
    return [_task(c, eval_batches=o["eval_batches"]) for c in configs[:o["num_tasks"]]]


def _quick_variant(index: int) -> SuiteTask:
    """Tiny MLPs of one structure (datasets of one shape, init scales vary): they share programs."""
    dataset = ("digits", "synthetic", "fashion_mnist")[index % 3]
    return _task({**_QUICK_BASE, "dataset": dataset, "init_scale": 1.0 / (1 + index // 3)}, eval_batches=2)


def _quick(o):
    configs = [_QUICK_BASE, {"family": "quadratic", "dim": 5, "condition_number": 10.0}]
    return [_task(c, eval_batches=o["eval_batches"]) for c in configs[:o["num_tasks"]]]


# name: (builder, default number of tasks, default seeds, description)
_SUITES: dict[str, tuple[Callable[[dict[str, Any]], list[SuiteTask]], int, int, str]] = {
    "iid": (_iid, 4, 3, "fresh samples of the training family"),
    "ood_width": (_ood_width, 7, 2, "MLP hidden width 1..1000 (8x8 Fashion-MNIST, batch 128)"),
    "ood_batch": (_ood_batch, 7, 2, "MLP batch size 1..10000 (8x8 Fashion-MNIST, 32 hidden)"),
    "ood_dataset": (_ood_dataset, 4, 2, "the MLP on other datasets and resolutions"),
    "ood_family": (_ood_family, 4, 2, "other task families: conv_pooling, conv_fc, quadratics"),
    "ood": (_ood, 10, 2, "ood_width and ood_batch together"),
    "quick": (_quick, 2, 2, "two tiny tasks, for tests and smoke runs"),
}


def suite_names() -> tuple[str, ...]:
    """Names of the suites."""
    return tuple(_SUITES)


def suite_description(name: str) -> str:
    """One line describing suite ``name``."""
    return _SUITES[name][3] if name in _SUITES else name


def make_suite(name: str, *, num_tasks: int | None = None, num_steps: int | None = None,
               num_seeds: int | None = None, eval_every: int | None = None, seed: int = 0,
               family: str = "mlp", full_size: bool = False, num_tuning_tasks: int | None = None,
               quick: bool = False) -> Suite:
    """Builds suite ``name`` (deterministic for given arguments).

    Args:
        name: one of :func:`suite_names`.
        num_tasks: tasks in the suite (sweeps: points of the sweep); default per suite.
        num_steps: the horizon; default 500 (60 with ``quick``).
        num_seeds: seeds per run; default 3 for ``iid``, 2 otherwise.
        eval_every: evaluation interval; default ``num_steps // 20``.
        seed: seed of the sampled tasks (``iid`` and the tuning tasks).
        family: the training family (``iid`` samples it; tuning tasks come from it).
        full_size: sample the family's own distribution instead of capping image size (8),
            batch size (128), widths (64), channels (32) and quadratic dimension (100).
        num_tuning_tasks: tuning tasks for ``*_global`` baselines; default 0 for ``iid``
            (leave-one-out over its tasks) and 3 otherwise (1 with ``quick``).
        quick: tiny sizes (digits, narrow nets, 60 steps) for tests and smoke runs.

    Raises:
        ValueError: unknown suite or family, or a non-positive size.

    Example:
        >>> suite = make_suite("ood_width", num_tasks=4, num_steps=100)
        >>> [t.sweep[1] for t in suite.tasks]
        [1, 10, 100, 1000]
    """
    if name not in _SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(_SUITES)}.")
    builder, default_tasks, default_seeds, _ = _SUITES[name]
    lopt.tasks.get(family)  # validates the name
    quick = bool(quick) or name == "quick"
    num_steps = _check_positive("num_steps", num_steps if num_steps is not None else (60 if quick else 500))
    num_seeds = _check_positive("num_seeds", num_seeds if num_seeds is not None else default_seeds)
    num_tasks = _check_positive("num_tasks", num_tasks if num_tasks is not None else
                                (min(default_tasks, 3) if quick else default_tasks))
    eval_every = _check_positive("eval_every", eval_every if eval_every is not None else max(1, num_steps // 20))
    if num_tuning_tasks is None:
        num_tuning_tasks = 0 if name == "iid" else (1 if quick else 3)
    if isinstance(num_tuning_tasks, bool) or not isinstance(num_tuning_tasks, int) or num_tuning_tasks < 0:
        raise ValueError(f"num_tuning_tasks={num_tuning_tasks!r} must be a non-negative integer.")
    options = {"num_tasks": num_tasks, "seed": int(seed), "family": family, "full_size": bool(full_size),
               "quick": quick, "eval_batches": 2 if quick else 8, "num_tuning_tasks": num_tuning_tasks}
    if quick and name == "iid":
        tasks = [_quick_variant(i) for i in range(num_tasks)]
    else:
        tasks = builder(options)
    if not tasks:
        raise ValueError(f"suite {name!r} has no tasks with num_tasks={num_tasks}.")
    if quick:
        tuning = tuple(_quick_variant(num_tasks + i) for i in range(num_tuning_tasks))
    else:
        tuning = _samples(family, num_tuning_tasks, seed=seed, stream=1, full_size=full_size,
                          eval_batches=options["eval_batches"])
    return Suite(name, tuple(tasks), tuning, num_steps, num_seeds, min(eval_every, num_steps),
                 tuple(sorted(options.items())))
