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
=================  ===============  =======================================================

``adam_lr_grid`` is Adam (default betas and eps) over :func:`lopt.optimizers.learning_rate_grid`
(15 log-spaced learning rates from 1e-4 to 1); the random searches draw N settings with
:func:`lopt.optimizers.sample_hparams` from TaskSet's search spaces, the same N on every task.
Global and per-task baselines of one optimizer share their runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

import lopt.optimizers
from lopt.evaluate.optimizer_spec import OptimizerFactory, OptimizerSpec

__all__ = ["DEFAULT_BASELINES", "SCOPES", "Baseline", "baseline_names", "get_baseline", "parse_baselines",
           "search_description", "search_spec"]

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
    """

    name: str
    runs: str
    scope: str
    description: str


_SEARCHES = {
    "adam_lr_grid": ("adam", "Adam over a log-spaced learning-rate grid from 1e-4 to 1"),
    "adam8p_search": ("adam8p", "Adam8p, N random settings from TaskSet's search space"),
    "nadamw_search": ("nadamw", "NAdamW, N random settings from TaskSet's search space"),
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


def search_spec(runs: str, *, num_trials: int = 8, grid_size: int = 15, seed: int = 0) -> OptimizerSpec:
    """The runs of a search: ``"adam_lr_grid"``, ``"adam8p_search"`` or ``"nadamw_search"``.

    Args:
        runs: the search's label.
        num_trials: N, settings drawn by the random searches.
        grid_size: points of the Adam learning-rate grid (15 in the paper).
        seed: seed of the random searches (the same draws on every task).

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
    for what, value in (("num_trials", num_trials), ("grid_size", grid_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{what}={value!r} must be a positive integer.")
    if runs == "adam_lr_grid":
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
                         source=source)


def search_description(runs: str) -> str:
    """One line describing a search, for reports."""
    return _SEARCHES[runs][1] if runs in _SEARCHES else runs
