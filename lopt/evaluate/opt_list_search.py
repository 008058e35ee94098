"""Learning an opt_list: random-search NAdamW over a task distribution, then greedy ordering.

The pipeline of TaskSet (arXiv 2002.11887), at the scale a caller can afford:

1. tasks: ``tasks_per_structure`` variants of each structure of a :func:`lopt.tasks.taskset`
   mixture under a :class:`~lopt.tasks.Budget` (variants of one structure share one compiled
   program); a fraction of the *structures* is held out, so held-out tasks are architectures
   the list never saw;
2. runs: the same ``num_trials`` NAdamW settings (:func:`lopt.optimizers.sample_hparams`) on
   every task, all settings x seeds of a task as one vmapped program
   (:func:`lopt.evaluate.runner.train_cells`), every run appended to the curve dataset
   ``<out>/curves`` (:mod:`lopt.evaluate.curves`; a re-run skips tasks already there);
3. table: the final validation loss (mean over seeds) of each setting on each task, normalised
   per task with :func:`lopt.evaluate.metrics.normalized` (initial loss -> 1, the best setting
   on that task -> 0, clipped to [-2, 2], diverged -> 2);
4. list: :func:`lopt.optimizers.opt_list.greedy_order` on the training tasks; on the held-out
   tasks, its best-of-k against random search's expected best-of-k
   (:func:`~lopt.optimizers.opt_list.expected_random_best_of_k`).

The list is written as ``<out>/opt_list.json`` (:func:`lopt.optimizers.save_opt_list`), with
the whole held-out curve in its ``info``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import lopt.tasks
from lopt.evaluate import metrics
from lopt.evaluate.baselines import search_spec
from lopt.evaluate.curves import CurveDataset, RunBatch, load
from lopt.evaluate.runner import train_cells
from lopt.evaluate.suites import SuiteTask, task_label
from lopt.optimizers.opt_list import (
    best_of_k,
    expected_random_best_of_k,
    greedy_order,
    save_opt_list,
)

__all__ = ["OptListResult", "OptListSearch", "learn_opt_list", "loss_table", "task_id"]

SOURCE = "opt_list"
OPTIMIZER = "nadamw"


@dataclasses.dataclass(frozen=True)
class OptListSearch:
    """What the opt_list search runs (every field is recorded in the list's ``info``).

    Attributes:
        families: task families of the mixture (default: :func:`lopt.tasks.taskset`'s).
        num_structures: structures per family (each compiles once).
        tasks_per_structure: variants per structure (dynamic settings: init scale, loss scale,
            reparameterisation...).
        max_params, max_flops: the :class:`~lopt.tasks.Budget` of a structure.
        num_trials: NAdamW settings run on every task (TaskSet: 1,000).
        num_steps: horizon of every run.
        num_seeds: seeds per run.
        eval_every: validation/test evaluation interval.
        eval_batches: batches per evaluation.
        heldout_fraction: fraction of structures whose tasks are held out.
        list_size: length of the learned list.
        seed: seed of the mixture's catalogue, the variants, the held-out split and the settings.
    """

    families: tuple[str, ...] | None = None
    num_structures: int = 2
    tasks_per_structure: int = 4
    max_params: int = 50_000
    max_flops: float = 1e7
    num_trials: int = 64
    num_steps: int = 200
    num_seeds: int = 1
    eval_every: int = 20
    eval_batches: int = 4
    heldout_fraction: float = 0.25
    list_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_structures", "tasks_per_structure", "max_params", "num_trials", "num_steps", "num_seeds",
                     "eval_every", "eval_batches", "list_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"OptListSearch: {name}={value!r} must be a positive integer.")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"OptListSearch: heldout_fraction={self.heldout_fraction!r} must be in [0, 1).")
        if self.list_size > self.num_trials:
            raise ValueError(f"OptListSearch: list_size={self.list_size} exceeds num_trials={self.num_trials}; "
                             "the list orders the trials, so ask for at most num_trials.")

    def distribution(self) -> lopt.tasks.Mixture:
        """The mixture the tasks come from."""
        budget = lopt.tasks.Budget(max_params=int(self.max_params), max_flops=float(self.max_flops))
        return lopt.tasks.taskset(list(self.families) if self.families else None,
                                  num_structures=self.num_structures, budget=budget, seed=self.seed)

    def tasks(self) -> list[tuple[lopt.tasks.TaskConfig, bool]]:
        """``(config, held_out)`` for every task, grouped by structure (deterministic)."""
        dist = self.distribution()
        structures = dist.structures()
        rng = np.random.default_rng([self.seed, 7])
        num_heldout = round(self.heldout_fraction * len(structures))
        heldout = set(rng.permutation(len(structures))[:num_heldout].tolist())
        out = []
        for index, structure in enumerate(structures):
            for cfg in dist.variants(structure, self.seed * 100_003 + index, self.tasks_per_structure):
                out.append((cfg, index in heldout))
        return out


@dataclasses.dataclass
class OptListResult:
    """What :func:`learn_opt_list` produced.

    Attributes:
        settings: the ordered list.
        order: the trial index of every list entry.
        train_best_of_k, heldout_best_of_k: ``[list_size]`` mean best-of-k normalised validation
            loss on the training and the held-out tasks.
        heldout_random_best_of_k: ``[list_size]`` random search's expected best-of-k there.
        path: the list file.
        info: everything recorded in the file's ``info``.
    """

    settings: list[dict[str, Any]]
    order: np.ndarray
    train_best_of_k: np.ndarray
    heldout_best_of_k: np.ndarray
    heldout_random_best_of_k: np.ndarray
    path: Path
    info: dict[str, Any]


def loss_table(table, task_ids: Sequence[str], hparams: Sequence[str], *, num_steps: int,
               source: str = SOURCE) -> np.ndarray:
    """``[tasks, settings]`` normalised final validation losses from a :class:`~lopt.evaluate.curves.CurveTable`.

    Per task: the final validation loss of every setting, mean over seeds (a diverged seed makes
    it NaN), normalised with the task's initial validation loss (-> 1) and its best setting
    (-> 0) by :func:`lopt.evaluate.metrics.normalized`. A task on which every setting diverged
    normalises to 2 everywhere.

    Raises:
        ValueError: a (task, setting) cell missing from the table.
    """
    rows = np.flatnonzero((table["source"] == source) & (table["num_steps"] == num_steps))
    final: dict[tuple[str, str], list[float]] = {}
    initial: dict[str, list[float]] = {}
    for i in rows:
        key = (str(table["task"][i]), str(table["hparams"][i]))
        final.setdefault(key, []).append(float(table["final_valid_loss"][i]))
        initial.setdefault(key[0], []).append(float(table["initial_valid_loss"][i]))
    raw = np.full((len(task_ids), len(hparams)), np.nan)
    for t, task in enumerate(task_ids):
        for h, key in enumerate(hparams):
            if (task, key) not in final:
                raise ValueError(f"loss_table: no {num_steps}-step run of setting {h} on task {task}; run the search "
                                 "for it first (`lopt optlist learn` resumes).")
            raw[t, h] = np.mean(final[(task, key)])
    start = np.array([np.nanmean(initial[t]) for t in task_ids])
    best = np.where(np.isfinite(raw), raw, np.inf).min(axis=1)
    # No setting went below the initial loss: use the initial loss itself as the scale.
    best = np.where(np.isfinite(best) & (best < start), best, start - np.maximum(np.abs(start), 1e-6))
    return np.asarray(metrics.normalized(raw, start[:, None], best[:, None]), dtype=np.float64)


def task_id(cfg: lopt.tasks.TaskConfig) -> str:
    """The task's id in the curve dataset: the same as ``lopt eval``'s (``"<family>-<10 hex>"``)."""
    return SuiteTask(cfg, "", None, 1).id


def _run_tasks(search: OptListSearch, dataset: CurveDataset, tasks, spec,
               progress: Callable[[str], None] | None) -> None:
    keys = spec.keys()
    seeds = list(range(search.num_seeds))
    present = dataset.cells()
    for number, (cfg, heldout) in enumerate(tasks, start=1):
        tid = task_id(cfg)
        wanted = {(tid, OPTIMIZER, k, s, search.num_steps) for k in keys for s in seeds}
        if wanted <= present:
            continue
        start = time.perf_counter()
        task = lopt.tasks.build(cfg)
        curves = train_cells(task, spec, range(len(keys)), seeds, num_steps=search.num_steps,
                             eval_every=search.eval_every, eval_batches=search.eval_batches)
        n = len(keys) * len(seeds)

        def flat(x, n=n):
            return np.asarray(x).reshape(n, *np.shape(x)[2:])

        dataset.append(RunBatch(
            task=[tid] * n, optimizer=OPTIMIZER, hparams=[k for k in keys for _ in seeds],
            seed=seeds * len(keys), train_loss=flat(curves.train_loss), eval_steps=np.asarray(curves.eval_steps)[0, 0],
            valid_loss=flat(curves.valid_loss), valid_accuracy=flat(curves.valid_accuracy),
            test_loss=flat(curves.test_loss), test_accuracy=flat(curves.test_accuracy), source=SOURCE,
            task_configs={tid: cfg.to_dict()}))
        present = dataset.cells()
        if progress:
            inner = cfg["task"] if cfg["family"] == "augmented" else cfg
            progress(f"task {number}/{len(tasks)} {'(held out) ' if heldout else ''}{task_label(inner)}: "
                     f"{n} runs in {time.perf_counter() - start:.1f}s")


def _figure(result: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, len(result["heldout"]) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ks, result["heldout"], "o-", ms=3, label="learned opt_list, held-out tasks")
    ax.plot(ks, result["random"], "s--", ms=3, label="random-search NAdamW (expected), held-out")
    ax.plot(ks, result["train"], ":", color="gray", label="learned opt_list, training tasks")
    ax.set_xscale("log")
    ax.set_xlabel("k (settings tried)")
    ax.set_ylabel("mean best-of-k normalised valid loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learn_opt_list(out, search: OptListSearch = OptListSearch(), *,
                   progress: Callable[[str], None] | None = None) -> OptListResult:
    """Runs (or resumes) the opt_list search into directory ``out`` and writes the ordered list.

    Args:
        out: output directory: ``curves/`` (the curve dataset), ``opt_list.json`` and
            ``opt_list_best_of_k.png``.
        search: what to run (see :class:`OptListSearch`).
        progress: called with one line per finished task.

    Returns:
        :class:`OptListResult`.

    Example:
        >>> import tempfile
        >>> search = OptListSearch(families=("quadratic",), num_structures=2, tasks_per_structure=2,
        ...                        num_trials=4, num_steps=10, eval_every=5, eval_batches=1,
        ...                        heldout_fraction=0.5, list_size=3)
        >>> result = learn_opt_list(tempfile.mkdtemp(), search)
        >>> len(result.settings), result.heldout_best_of_k.shape
        (3, (3,))
    """
    if not isinstance(search, OptListSearch):
        raise TypeError(f"learn_opt_list: search must be an OptListSearch, got {type(search).__name__}.")
    out = Path(out)
    dataset = CurveDataset(out / "curves")
    tasks = search.tasks()
    if not any(h for _, h in tasks) or all(h for _, h in tasks):
        raise ValueError(f"learn_opt_list: heldout_fraction={search.heldout_fraction} leaves no training or no "
                         f"held-out structure among {len(tasks) // search.tasks_per_structure}; change it.")
    spec = search_spec("nadamw_search", num_trials=search.num_trials, seed=search.seed)
    _run_tasks(search, dataset, tasks, spec, progress)
    table = load(dataset.directory)
    ids = [task_id(cfg) for cfg, _ in tasks]
    losses = loss_table(table, ids, spec.keys(), num_steps=search.num_steps)
    held = np.array([h for _, h in tasks])
    order = greedy_order(losses[~held], search.list_size)
    ks = list(range(1, search.list_size + 1))
    curves = {"train": best_of_k(losses[~held], order), "heldout": best_of_k(losses[held], order),
              "random": expected_random_best_of_k(losses[held], ks)}
    settings = [dict(spec.settings[i]) for i in order]
    families = sorted({lopt.tasks.base_family(cfg) for cfg, _ in tasks})
    info = {
        "search": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(search).items()},
        "families": families, "num_train_tasks": int((~held).sum()), "num_heldout_tasks": int(held.sum()),
        "num_structures": len(tasks) // search.tasks_per_structure,
        "settings_source": spec.source, "trial_indices": order.tolist(),
        "normalisation": "final validation loss, mean over seeds; initial -> 1, best trial on the task -> 0, "
                         "clipped to [-2, 2], diverged -> 2 (lopt.evaluate.metrics.normalized)",
        "train_best_of_k": curves["train"].round(5).tolist(),
        "heldout_best_of_k": curves["heldout"].round(5).tolist(),
        "heldout_random_best_of_k": curves["random"].round(5).tolist(),
        "curve_dataset_sha256": table.digest,
    }
    path = save_opt_list(out / "opt_list.json", settings, info)
    _figure(curves, out / "opt_list_best_of_k.png")
    return OptListResult(settings, order, curves["train"], curves["heldout"], curves["random"], path, info)
