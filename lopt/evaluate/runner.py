"""The runner: train optimizers on a suite's tasks with several seeds, resumably.

The unit of work is a *job*: one task and one :class:`~lopt.evaluate.OptimizerSpec`. A job's
settings x seeds train as ONE compiled program (:func:`train_cells`: ``vmap`` over settings,
``vmap`` over seeds, ``lax.scan`` over steps), with the settings and ``theta`` as traced
arguments, so a 15-point learning-rate grid with three seeds compiles once, and a task of the
same structure (or a new theta of the same architecture) reuses the program. Each finished job
is appended to the results directory at once; re-running skips finished cells, so an
interrupted evaluation loses at most the job in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lopt.inner
import lopt.tasks
from lopt.evaluate.baselines import Baseline, parse_baselines, search_spec
from lopt.evaluate.optimizer_spec import OptimizerSpec
from lopt.evaluate.results import ResultsWriter, make_header
from lopt.evaluate.suites import Suite, SuiteTask
from lopt.inner import Curves

__all__ = ["Job", "evaluate", "optimizer_specs", "plan", "seed_keys", "train_cells"]

#: The base key of every evaluation: seed ``s`` trains with ``fold_in(BASE_KEY, s)``, so all
#: optimizers start seed ``s`` of a task from the same params and see the same batches.
BASE_SEED = 0


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """The training keys of ``seeds``: ``fold_in(key(0), s)`` (the same for every optimizer)."""
    base = jax.random.key(BASE_SEED)
    return jnp.stack([jax.random.fold_in(base, int(s)) for s in seeds])


@functools.partial(jax.jit, static_argnames=("factory", "num_steps", "eval_every", "eval_batches"))
def _train_cells(task, hparams, index, theta, keys, *, factory, num_steps, eval_every, eval_batches):
    def one(h, _, key):
        optimizer = factory(h, theta, num_steps)
        return lopt.inner.train(task, optimizer, key=key, num_steps=num_steps, eval_every=eval_every,
                                eval_batches=eval_batches)

    over_seeds = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(over_seeds, in_axes=(0, 0, None))(hparams, index, keys)


def train_cells(task: lopt.tasks.Task, spec: OptimizerSpec, setting_indices: Sequence[int], seeds: Sequence[int],
                *, num_steps: int, eval_every: int, eval_batches: int) -> Curves:
    """Trains the chosen settings of ``spec`` x ``seeds`` on ``task`` as one compiled program.

    Args:
        task: the task.
        spec: the optimizer and its settings.
        setting_indices: which of ``spec.settings`` to train (``G`` of them).
        seeds: the seeds (``S``); seed ``s`` uses :func:`seed_keys`.
        num_steps, eval_every, eval_batches: as in :func:`lopt.inner.train`.

    Returns:
        :class:`lopt.inner.Curves` with leading axes ``[G, S]``.

    Example:
        >>> import lopt
        >>> from lopt.evaluate import search_spec
        >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
        >>> curves = train_cells(task, search_spec("adam_lr_grid", grid_size=3), [0, 1, 2], [0, 1],
        ...                      num_steps=20, eval_every=10, eval_batches=1)
        >>> curves.train_loss.shape
        (3, 2, 20)
    """
    indices = [int(i) for i in setting_indices]
    if not indices or not seeds:
        raise ValueError("train_cells: give at least one setting index and one seed.")
    hparams = {k: jnp.asarray(v) for k, v in spec.stacked(indices).items()}
    return _train_cells(task, hparams, jnp.arange(len(indices)), spec.theta, seed_keys(seeds),
                        factory=spec.factory, num_steps=int(num_steps), eval_every=int(eval_every),
                        eval_batches=int(eval_batches))


@dataclasses.dataclass
class Job:
    """One task x one optimizer spec, and the cells of it still to run.

    Attributes:
        task: the suite task.
        spec: the optimizer spec.
        tuning: whether the task is a tuning task (only global baselines run there).
        todo: ``(setting index, seed)`` pairs not yet in the results.
    """

    task: SuiteTask
    spec: OptimizerSpec
    tuning: bool
    todo: list[tuple[int, int]]

    @property
    def num_cells(self) -> int:
        """Cells of the job still to run."""
        return len(self.todo)


def optimizer_specs(candidates: Sequence[OptimizerSpec], baselines: Sequence[Baseline], *, num_trials: int = 8,
                    grid_size: int = 15, search_seed: int = 0) -> dict[str, OptimizerSpec]:
    """Every spec an evaluation runs, by label: the candidates, then the baselines' searches.

    Raises:
        ValueError: two candidates share a label, or a candidate uses a baseline's or a search's name.
    """
    specs: dict[str, OptimizerSpec] = {}
    for spec in candidates:
        if not isinstance(spec, OptimizerSpec):
            raise TypeError(f"candidates must be OptimizerSpec s (see lopt.evaluate.resolve), got {spec!r}.")
        if spec.label in specs:
            raise ValueError(f"two optimizers are labelled {spec.label!r}; give them distinct labels.")
        specs[spec.label] = spec
    names = {b.name for b in baselines}
    clash = sorted(names & set(specs))
    if clash:
        raise ValueError(f"optimizer label {clash[0]!r} is the name of a baseline; label your optimizer differently.")
    for baseline in baselines:
        if baseline.runs not in specs:
            specs[baseline.runs] = search_spec(baseline.runs, num_trials=num_trials, grid_size=grid_size,
                                               seed=search_seed)
        elif specs[baseline.runs].role != "baseline":
            raise ValueError(f"optimizer label {baseline.runs!r} is reserved for the runs of baseline "
                             f"{baseline.name}; label your optimizer differently.")
    return specs


def plan(suite: Suite, specs: dict[str, OptimizerSpec], baselines: Sequence[Baseline],
         finished: set[tuple[str, str, str, int]]) -> list[Job]:
    """Lists the jobs of an evaluation that still have cells to run, task by task.

    Every spec runs on every task of the suite; the searches of global baselines also run on
    the tuning tasks.
    """
    global_searches = {b.runs for b in baselines if b.scope == "global"}
    jobs = []
    tasks = [(t, False) for t in suite.tasks] + [(t, True) for t in suite.tuning_tasks]
    for task, tuning in tasks:
        for label, spec in specs.items():
            if tuning and label not in global_searches:
                continue
            keys = spec.keys()
            todo = [(i, s) for i in range(len(keys)) for s in range(suite.num_seeds)
                    if (task.id, label, keys[i], s) not in finished]
            if todo:
                jobs.append(Job(task, spec, tuning, todo))
    return jobs


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.7g}"


def cell_rows(task_id: str, label: str, hkey: str, seed: int, train_loss: np.ndarray, eval_steps: np.ndarray,
              evals: dict[str, np.ndarray]) -> list[list[Any]]:
    """The CSV rows of one cell (steps ``0..T``), see :mod:`lopt.evaluate.results`."""
    num_steps = len(train_loss)
    by_step = {int(s): i for i, s in enumerate(eval_steps)}
    columns = ("valid_loss", "valid_accuracy", "test_loss", "test_accuracy")
    rows = []
    for step in range(num_steps + 1):
        train = _fmt(float(train_loss[step - 1])) if step else ""
        i = by_step.get(step)
        values = [_fmt(float(evals[c][i])) for c in columns] if i is not None else ["", "", "", ""]
        rows.append([task_id, label, hkey, seed, step, train, *values])
    return rows


def run_job(job: Job, suite: Suite, writer: ResultsWriter) -> None:
    """Trains the cells a job has left (one compiled program) and appends them to the results."""
    settings = sorted({i for i, _ in job.todo})
    seeds = sorted({s for _, s in job.todo})
    task = lopt.tasks.build(job.task.config)
    curves = train_cells(task, job.spec, settings, seeds, num_steps=suite.num_steps, eval_every=suite.eval_every,
                         eval_batches=job.task.eval_batches)
    curves = jax.tree.map(np.asarray, curves)
    keys = job.spec.keys()
    wanted = set(job.todo)
    rows = []
    for gi, setting in enumerate(settings):
        for si, seed in enumerate(seeds):
            if (setting, seed) not in wanted:
                continue
            evals = {c: getattr(curves, c)[gi, si] for c in ("valid_loss", "valid_accuracy", "test_loss",
                                                            "test_accuracy")}
            rows.extend(cell_rows(job.task.id, job.spec.label, keys[setting], seed, curves.train_loss[gi, si],
                                  curves.eval_steps[gi, si], evals))
    writer.append(rows)


def evaluate(suite: Suite, candidates: Sequence[OptimizerSpec], out: str | os.PathLike, *,
             baselines: Sequence[Baseline] | str | None = None, num_trials: int = 8, grid_size: int = 15,
             search_seed: int = 0, progress: bool | Callable[[Job, int], None] = False) -> str:
    """Runs (or resumes) an evaluation into the results directory ``out``.

    Args:
        suite: the tasks, horizon, seeds and schedule (see :func:`lopt.evaluate.make_suite`).
        candidates: the optimizers to evaluate (e.g. from :func:`lopt.evaluate.resolve`).
        out: the results directory; re-running with the same suite resumes, and adding
            optimizers or baselines to an existing directory runs only what is new.
        baselines: :class:`Baseline` s, or a string like ``"adam_global,adam_per_task"``
            (default: :data:`~lopt.evaluate.baselines.DEFAULT_BASELINES`).
        num_trials: N of the random-search baselines.
        grid_size: points of the Adam learning-rate grid.
        search_seed: seed of the random searches.
        progress: ``True`` for a tqdm bar over cells, or a callback ``(job, cells_done)``
            called after each job.

    Returns:
        The results directory, as a string.

    Example:
        >>> import tempfile
        >>> from lopt.evaluate import make_suite, resolve
        >>> suite = make_suite("quick", num_tasks=1, num_steps=20)
        >>> out = evaluate(suite, [resolve("sgd:learning_rate=0.1")], tempfile.mkdtemp(),
        ...                baselines="adam_per_task", grid_size=3)
    """
    if isinstance(baselines, str) or baselines is None:
        baselines = parse_baselines(baselines)
    specs = optimizer_specs(candidates, baselines, num_trials=num_trials, grid_size=grid_size,
                            search_seed=search_seed)
    header = make_header(suite.to_dict(), {label: s.describe() for label, s in specs.items()},
                         [b.name for b in baselines])
    writer = ResultsWriter(out, header)
    jobs = plan(suite, specs, baselines, writer.finished)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        total = sum(j.num_cells for j in jobs)
        bar = tqdm(total=total, unit="cell", desc="evaluating")
    done = 0
    try:
        for number, job in enumerate(jobs, start=1):
            if bar is not None:
                where = "tuning task" if job.tuning else "task"
                bar.set_description(f"job {number}/{len(jobs)}: {job.spec.label} on {where} {job.task.label}")
            run_job(job, suite, writer)
            done += job.num_cells
            if bar is not None:
                bar.update(job.num_cells)
            elif callable(progress):
                progress(job, done)
    finally:
        if bar is not None:
            bar.close()
    return str(writer.directory)

