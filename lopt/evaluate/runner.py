"""The runner: train optimizers on a suite's tasks with several seeds, resumably.

The unit of work is a *job*: one task and one :class:`~lopt.evaluate.OptimizerSpec`. A job's
settings x seeds train as ONE compiled program (:func:`train_cells`: ``vmap`` over settings,
``vmap`` over seeds, ``lax.scan`` over steps), with the settings and ``theta`` as traced
arguments, so a 15-point learning-rate grid with three seeds compiles once, and a task of the
same structure (or a new theta of the same architecture) reuses the program. Each finished job
is appended to the results directory at once; re-running skips finished cells, so an
interrupted evaluation loses at most the job in flight. Every finished job is also appended to
the curve dataset ``<out>/curves`` (:mod:`lopt.evaluate.curves`).

With ``baseline_steps_factor=F`` the Adam learning-rate grid runs ``F`` times the suite's
horizon: its first T steps are exactly a T-step run (constant learning rate, batches indexed by
step), so selection and final losses use that prefix, and the whole run measures speedups up
to ``F``x (VeLOdrome ran Adam 10x longer).
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
from lopt.evaluate.baselines import EXTENDABLE_SEARCHES, Baseline, parse_baselines, search_spec
from lopt.evaluate.curves import CurveDataset, RunBatch
from lopt.evaluate.optimizer_spec import OptimizerSpec
from lopt.evaluate.results import ResultsWriter, make_header
from lopt.evaluate.suites import Suite, SuiteTask
from lopt.inner import Curves

__all__ = ["Job", "divisor_near", "evaluate", "optimizer_specs", "plan", "seed_keys", "train_cells"]

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
                    grid_size: int = 15, search_seed: int = 0, opt_list_trials: int = 10,
                    num_steps: int | None = None, baseline_steps_factor: int = 1) -> dict[str, OptimizerSpec]:
    """Every spec an evaluation runs, by label: the candidates, then the baselines' searches.

    Args:
        candidates: the optimizers evaluated.
        baselines: the tuned baselines (their searches are added).
        num_trials, grid_size, search_seed, opt_list_trials: as in :func:`search_spec`.
        num_steps: the suite's horizon (needed when ``baseline_steps_factor > 1``).
        baseline_steps_factor: the :data:`~lopt.evaluate.baselines.EXTENDABLE_SEARCHES` run this
            many times ``num_steps``.

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
    factor = _check_factor(baseline_steps_factor)
    if factor > 1 and num_steps is None:
        raise ValueError("optimizer_specs: baseline_steps_factor > 1 needs num_steps, the suite's horizon.")
    for baseline in baselines:
        for runs in baseline.searches:
            if runs not in specs:
                longer = num_steps * factor if factor > 1 and runs in EXTENDABLE_SEARCHES else None
                specs[runs] = search_spec(runs, num_trials=num_trials, grid_size=grid_size, seed=search_seed,
                                          opt_list_trials=opt_list_trials, num_steps=longer)
            elif specs[runs].role != "baseline":
                raise ValueError(f"optimizer label {runs!r} is reserved for the runs of baseline "
                                 f"{baseline.name}; label your optimizer differently.")
    return specs


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"baseline_steps_factor={factor!r} must be an integer >= 1 (4 measures speedups up to 4x).")
    return int(factor)


def divisor_near(num_steps: int, eval_every: int) -> int:
    """The divisor of ``num_steps`` closest to ``eval_every``."""
    divisors = [d for d in range(1, num_steps + 1) if num_steps % d == 0]
    return min(divisors, key=lambda d: (abs(d - eval_every), d))


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


def run_job(job: Job, suite: Suite, writer: ResultsWriter, dataset: CurveDataset | None = None) -> None:
    """Trains the cells a job has left (one compiled program) and appends them to the results.

    The same runs are appended to ``dataset`` (a :class:`~lopt.evaluate.curves.CurveDataset`) if given.
    """
    settings = sorted({i for i, _ in job.todo})
    seeds = sorted({s for _, s in job.todo})
    task = lopt.tasks.build(job.task.config)
    curves = train_cells(task, job.spec, settings, seeds, num_steps=job.spec.num_steps or suite.num_steps,
                         eval_every=suite.eval_every, eval_batches=job.task.eval_batches)
    curves = jax.tree.map(np.asarray, curves)
    keys = job.spec.keys()
    wanted = set(job.todo)
    rows, cells = [], []
    columns = ("valid_loss", "valid_accuracy", "test_loss", "test_accuracy")
    for gi, setting in enumerate(settings):
        for si, seed in enumerate(seeds):
            if (setting, seed) not in wanted:
                continue
            cells.append((gi, si, keys[setting], seed))
            evals = {c: getattr(curves, c)[gi, si] for c in columns}
            rows.extend(cell_rows(job.task.id, job.spec.label, keys[setting], seed, curves.train_loss[gi, si],
                                  curves.eval_steps[gi, si], evals))
    writer.append(rows)
    if dataset is not None:
        pick = lambda x: np.stack([x[gi, si] for gi, si, _, _ in cells])
        dataset.append(RunBatch(
            task=job.task.id, optimizer=job.spec.label, hparams=[k for _, _, k, _ in cells],
            seed=[s for *_, s in cells], train_loss=pick(curves.train_loss), eval_steps=curves.eval_steps[0, 0],
            **{c: pick(getattr(curves, c)) for c in columns}, source="eval",
            task_configs={job.task.id: job.task.config.to_dict()}))


def evaluate(suite: Suite, candidates: Sequence[OptimizerSpec], out: str | os.PathLike, *,
             baselines: Sequence[Baseline] | str | None = None, num_trials: int = 8, grid_size: int = 15,
             search_seed: int = 0, opt_list_trials: int = 10, baseline_steps_factor: int = 1,
             progress: bool | Callable[[Job, int], None] = False) -> str:
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
        opt_list_trials: K, the opt_list settings of the ``opt_list`` baselines.
        baseline_steps_factor: the Adam learning-rate grid runs this many times the suite's
            horizon, so speedups up to this factor are measured (``lopt eval`` uses 4). Needs
            ``suite.eval_every`` to divide ``suite.num_steps``.
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
    factor = _check_factor(baseline_steps_factor)
    if factor > 1 and suite.num_steps % suite.eval_every:
        raise ValueError(f"baseline_steps_factor={factor} needs an evaluation at the suite's last step "
                         f"{suite.num_steps} of the longer runs, but eval_every={suite.eval_every} does not divide it; "
                         f"pass eval_every={divisor_near(suite.num_steps, suite.eval_every)} (or --eval-every).")
    specs = optimizer_specs(candidates, baselines, num_trials=num_trials, grid_size=grid_size,
                            search_seed=search_seed, opt_list_trials=opt_list_trials, num_steps=suite.num_steps,
                            baseline_steps_factor=factor)
    header = make_header(suite.to_dict(), {label: s.describe() for label, s in specs.items()},
                         [b.name for b in baselines])
    writer = ResultsWriter(out, header)
    dataset = CurveDataset(writer.directory / "curves")
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
            run_job(job, suite, writer, dataset)
            done += job.num_cells
            if bar is not None:
                bar.update(job.num_cells)
            elif callable(progress):
                progress(job, done)
    finally:
        if bar is not None:
            bar.close()
    return str(writer.directory)

