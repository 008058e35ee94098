"""Tuned baselines: the ladder of Metz et al. 2020 (arXiv 2009.11243, figure 1).

A baseline is a *search* (the runs: a learning-rate grid or a random search, an
:class:`~lopt.evaluate.OptimizerSpec` with many settings) plus a *selection rule*:

=================  ===============  =======================================================
baseline           runs             selection (always on the validation split)
=================  ===============  =======================================================
adam_global        adam_lr_grid     one learning rate for every task, chosen on the tuning
                                    tasks (samples of the training family)
adam_per_task      adam_lr_grid     the best of the 15 learning rates on each task
adam8p_global      adam8p_search    one of N random Adam8p settings, chosen on tuning tasks
adam8p_per_task    adam8p_search    the best of the N settings on each task
nadamw_global      nadamw_search    one of N random NAdamW settings, chosen on tuning tasks
nadamw_per_task    nadamw_search    the best of the N settings on each task
opt_list_per_task  opt_list         the best of the first K settings of lopt's learned
                                    NAdamW list (:func:`lopt.optimizers.opt_list`)
adam8p_opt_list_   adam8p_search +  the best of the N Adam8p settings and the K opt_list
per_task           opt_list         settings on each task (N + K trials)
=================  ===============  =======================================================

``adam_lr_grid`` is Adam (default betas and eps) over :func:`lopt.optimizers.learning_rate_grid`
(15 log-spaced learning rates from 1e-4 to 1); the random searches draw N settings with
:func:`lopt.optimizers.sample_hparams` from TaskSet's search spaces, the same N on every task;
``opt_list`` is the first K settings of the shipped list (K <= its length). Global and
per-task baselines of one optimizer share their runs.

The paper's trial counts: Adam LR 14, Adam8p 10 and 1,000, opt_list 10 and 1,000, Adam8p +
opt_list 2,000 (``--trials`` sets N, ``--opt-list-trials`` sets K).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

import lopt.optimizers
from lopt.evaluate.optimizer_spec import OptimizerFactory, OptimizerSpec

__all__ = ["DEFAULT_BASELINES", "SCOPES", "Baseline", "baseline_names", "get_baseline", "parse_baselines",
           "search_description", "search_spec"]

#: The search whose runs may be longer than the candidates' (``baseline_steps_factor``): constant-
#: learning-rate Adam, whose first T steps are exactly a T-step run (same batches, no schedule).
EXTENDABLE_SEARCHES = ("adam_lr_grid",)

SCOPES = ("global", "per_task")
#: The baselines ``lopt eval`` compares against unless told otherwise.
DEFAULT_BASELINES = ("adam_global", "adam_per_task")


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A tuned baseline: which runs it selects from and how.

    Attributes:
        name: e.g. ``"adam_per_task"``.
        runs: label of the search whose runs it selects from (``"adam_lr_grid"``...).
        scope: ``"per_task"`` (best setting on each task) or ``"global"`` (one setting, chosen
            on the tuning tasks, applied to every task).
        description: one line for reports.
        extra_runs: further searches a per-task baseline also selects from (Adam8p + opt_list).
    """

    name: str
    runs: str
    scope: str
    description: str
    extra_runs: tuple[str, ...] = ()

    @property
    def searches(self) -> tuple[str, ...]:
        """Every search the baseline selects from: ``runs`` then ``extra_runs``."""
        return (self.runs, *self.extra_runs)


_SEARCHES = {
    "adam_lr_grid": ("adam", "Adam over a log-spaced learning-rate grid from 1e-4 to 1"),
    "adam8p_search": ("adam8p", "Adam8p, N random settings from TaskSet's search space"),
    "nadamw_search": ("nadamw", "NAdamW, N random settings from TaskSet's search space"),
    "opt_list": ("nadamw", "NAdamW, the first K settings of lopt's learned opt_list"),
}

_BASELINES = {b.name: b for b in [
    Baseline("adam_global", "adam_lr_grid", "global", "Adam, one learning rate chosen on the tuning tasks"),
    Baseline("adam_per_task", "adam_lr_grid", "per_task", "Adam, learning rate tuned per task on the grid"),
    Baseline("adam8p_global", "adam8p_search", "global", "Adam8p, one random-search setting chosen on the "
             "tuning tasks"),
    Baseline("adam8p_per_task", "adam8p_search", "per_task", "Adam8p, random search per task"),
    Baseline("nadamw_global", "nadamw_search", "global", "NAdamW, one random-search setting chosen on the "
             "tuning tasks"),
    Baseline("nadamw_per_task", "nadamw_search", "per_task", "NAdamW, random search per task"),
    Baseline("opt_list_per_task", "opt_list", "per_task", "NAdamW, the best of the first K opt_list settings "
             "per task"),
    Baseline("adam8p_opt_list_per_task", "adam8p_search", "per_task", "the best of N Adam8p random-search and "
             "K opt_list settings per task", extra_runs=("opt_list",)),
]}


def baseline_names() -> tuple[str, ...]:
    """Names of the tuned baselines, cheapest first."""
    return tuple(_BASELINES)


def get_baseline(name: str) -> Baseline:
    """The baseline ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.

    Example:
        >>> get_baseline("adam_per_task").runs
        'adam_lr_grid'
    """
    if name not in _BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(_BASELINES)} "
                         "(comma-separated, or 'all', or 'none').")
    return _BASELINES[name]


def parse_baselines(text: str | Sequence[str] | None) -> tuple[Baseline, ...]:
    """Baselines from ``"adam_global,adam_per_task"``, ``"all"``, ``"none"`` or a list of names.

    Example:
        >>> [b.name for b in parse_baselines("adam_per_task,nadamw_global")]
        ['adam_per_task', 'nadamw_global']
    """
    if text is None:
        names: Sequence[str] = DEFAULT_BASELINES
    elif isinstance(text, str):
        names = {"all": baseline_names(), "none": ()}.get(text.strip(), [n.strip() for n in text.split(",") if n.strip()])
    else:
        names = list(text)
    out = []
    for name in names:
        baseline = get_baseline(name)
        if baseline not in out:
            out.append(baseline)
    return tuple(out)


def search_spec(runs: str, *, num_trials: int = 8, grid_size: int = 15, seed: int = 0, opt_list_trials: int = 10,
                num_steps: int | None = None) -> OptimizerSpec:
    """The runs of a search: ``"adam_lr_grid"``, ``"adam8p_search"``, ``"nadamw_search"`` or ``"opt_list"``.

    Args:
        runs: the search's label.
        num_trials: N, settings drawn by the random searches.
        grid_size: points of the Adam learning-rate grid (15 in the paper).
        seed: seed of the random searches (the same draws on every task).
        opt_list_trials: K, the first settings of the shipped opt_list.
        num_steps: the search's own horizon when longer than the suite's (only for
            :data:`EXTENDABLE_SEARCHES`); ``None`` runs the suite's horizon.

    Returns:
        An :class:`OptimizerSpec` with ``role="baseline"``.

    Example:
        >>> spec = search_spec("adam_lr_grid")
        >>> len(spec.settings), spec.settings[0]["learning_rate"]
        (15, 0.0001)
    """
    if runs not in _SEARCHES:
        raise ValueError(f"unknown search {runs!r}; choose from {', '.join(_SEARCHES)}.")
    name, _ = _SEARCHES[runs]
    for what, value in (("num_trials", num_trials), ("grid_size", grid_size), ("opt_list_trials", opt_list_trials)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{what}={value!r} must be a positive integer.")
    if num_steps is not None and runs not in EXTENDABLE_SEARCHES:
        raise ValueError(f"search {runs!r} has a horizon-dependent schedule, so it runs the suite's horizon; only "
                         f"{', '.join(EXTENDABLE_SEARCHES)} can run longer (num_steps=None for the others).")
    if runs == "opt_list":
        settings = lopt.optimizers.opt_list(int(opt_list_trials))
        source = {"opt_list": f"opt_list({opt_list_trials})"}
    elif runs == "adam_lr_grid":
        base = lopt.optimizers.defaults("adam")
        settings = [{**base, "learning_rate": float(lr)}
                    for lr in lopt.optimizers.learning_rate_grid(int(grid_size))]
        source = {"grid": f"learning_rate_grid({grid_size})"}
    else:
        drawn = lopt.optimizers.sample_hparams(name, key=seed, num=int(num_trials))
        settings = [{k: (bool(v[i]) if v.dtype == np.bool_ else float(v[i])) for k, v in drawn.items()}
                    for i in range(int(num_trials))]
        source = {"random_search": f"sample_hparams({name!r}, key={seed}, num={num_trials})"}
    return OptimizerSpec(runs, OptimizerFactory("baseline", name), tuple(settings), role="baseline",
                         source=source, num_steps=num_steps)


def search_description(runs: str) -> str:
    """One line describing a search, for reports."""
    return _SEARCHES[runs][1] if runs in _SEARCHES else runs
