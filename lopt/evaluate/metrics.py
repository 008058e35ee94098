"""Metrics that compare optimizers: selection, normalised loss, improvement, win fraction, speedup.

Everything here is a small pure function of numpy arrays (host-side; no jit needed), so the
metrics can be checked on synthetic curves with known answers. Conventions:

* a *curve* is a 1-D array of losses, index ``i`` holding the loss after ``i + 1`` steps
  (so a curve of length ``T`` describes ``T`` steps);
* a *final* loss is a scalar per run; ``NaN`` (a diverged run) counts as the worst value;
* selection minimises a *validation* loss; reported numbers use whatever loss the caller passes
  (the report states which: test loss or training loss).

Task normalisation is :func:`lopt.meta.normalizer.normalize_loss` (the one implementation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lopt.meta.normalizer import normalize_loss

__all__ = [
    "improvement",
    "lower_envelope",
    "median",
    "normalized",
    "select_global",
    "select_per_task",
    "speedup",
    "steps_to_reach",
    "win_fraction",
]


def _as_float_array(name: str, values, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__}.") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}.")
    return array


def _worst_if_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), np.inf, values)


def lower_envelope(curves) -> np.ndarray:
    """The per-step minimum over a set of curves (e.g. one per learning rate of a grid).

    NaNs (steps after a run diverged) are ignored; a step where every curve is NaN is NaN.

    Args:
        curves: ``[num_curves, num_steps]`` losses.

    Returns:
        ``[num_steps]`` the lowest loss any curve has at each step.

    Example:
        >>> lower_envelope([[3.0, 2.0, 1.5], [2.5, 2.2, float("nan")]]).tolist()
        [2.5, 2.0, 1.5]
    """
    curves = _as_float_array("curves", curves, ndim=2)
    if curves.shape[0] == 0:
        raise ValueError("lower_envelope: got no curves; pass an array of shape [num_curves, num_steps].")
    finite_any = np.any(~np.isnan(curves), axis=0)
    filled = np.where(np.isnan(curves), np.inf, curves)
    return np.where(finite_any, filled.min(axis=0), np.nan)


def steps_to_reach(curve, target: float) -> float:
    """The number of steps a curve needs to get to ``target`` or below.

    Args:
        curve: ``[num_steps]`` losses; ``curve[i]`` is the loss after ``i + 1`` steps.
        target: the loss to reach.

    Returns:
        ``i + 1`` for the first ``i`` with ``curve[i] <= target``, or ``inf`` if the curve never
        gets there (or ``target`` is NaN).

    Example:
        >>> steps_to_reach([4.0, 3.0, 2.0, 1.0], 2.5)
        3.0
        >>> steps_to_reach([4.0, 3.0], 1.0)
        inf
    """
    curve = _as_float_array("curve", curve, ndim=1)
    if math.isnan(float(target)):
        return math.inf
    hits = np.flatnonzero(curve <= float(target))
    return float(hits[0] + 1) if hits.size else math.inf


def speedup(curve, baseline_curves) -> float:
    """VeLO's speedup: steps the baseline's envelope needs to match ``curve``, over ``curve``'s steps.

    The optimizer reaches ``curve[-1]`` in ``len(curve)`` steps. The baseline's per-step lower
    envelope over its runs (e.g. its learning-rate grid; the runs may be longer than ``curve``)
    needs :func:`steps_to_reach` that loss. The ratio is above 1 when the optimizer is faster.

    Args:
        curve: ``[num_steps]`` the optimizer's (smoothed) loss curve.
        baseline_curves: ``[num_runs, baseline_steps]`` or ``[baseline_steps]`` the baseline's curves.

    Returns:
        The speedup; ``inf`` if the baseline never reaches the optimizer's final loss within its
        steps (then ``baseline_steps / num_steps`` is a lower bound), ``nan`` if the optimizer's
        final loss is NaN (it diverged).

    Example:
        >>> import numpy as np
        >>> curve = 1.0 / np.arange(1, 101)
        >>> speedup(curve, curve)
        1.0
        >>> slower = 2.0 / np.arange(1, 201)  # the same curve, needing twice the steps
        >>> speedup(curve, slower)
        2.0
    """
    curve = _as_float_array("curve", curve, ndim=1)
    if curve.size == 0:
        raise ValueError("speedup: curve is empty; pass the optimizer's losses, one per step.")
    baseline = _as_float_array("baseline_curves", baseline_curves)
    if baseline.ndim == 1:
        baseline = baseline[None]
    if baseline.ndim != 2:
        raise ValueError(f"speedup: baseline_curves must be 1-D or 2-D, got shape {baseline.shape}.")
    final = float(curve[-1])
    if math.isnan(final):
        return math.nan
    return steps_to_reach(lower_envelope(baseline), final) / curve.size


def select_per_task(valid_losses) -> int:
    """Index of the setting with the lowest validation loss (a diverged setting, NaN, never wins).

    Args:
        valid_losses: ``[num_settings]`` final validation losses (e.g. averaged over seeds) of
            one task, or ``[num_settings, num_seeds]`` (then averaged; a diverged seed makes
            the setting's mean NaN, i.e. worst).

    Returns:
        The chosen index (the first one if all diverged).

    Example:
        >>> select_per_task([0.9, 0.4, float("nan"), 0.5])
        1
    """
    losses = _as_float_array("valid_losses", valid_losses)
    if losses.ndim == 2:
        losses = losses.mean(axis=1)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"select_per_task: valid_losses must be [settings] or [settings, seeds], "
                         f"got shape {losses.shape}.")
    return int(np.argmin(_worst_if_nan(losses)))


def normalized(losses, initial_loss, best_loss, *, clip: float = 2.0) -> np.ndarray:
    """Task-normalised losses as numpy: ``initial -> 1``, ``best -> 0``, clipped; NaN -> ``clip``.

    A host-side wrapper of :func:`lopt.meta.normalizer.normalize_loss` (the one
    implementation of task normalisation).

    Example:
        >>> normalized([1.5, 1.0, 3.0], initial_loss=2.0, best_loss=1.0).tolist()
        [0.5, 0.0, 2.0]
    """
    return np.asarray(normalize_loss(np.asarray(losses, np.float32), initial_loss, best_loss, clip=clip),
                      dtype=np.float64)


def select_global(valid_losses, initial_losses, *, clip: float = 2.0) -> int:
    """One setting for every task: the lowest mean task-normalised validation loss.

    Each task's losses are normalised with that task's initial loss and its best setting's
    loss (:func:`normalized`), so no task dominates the choice; diverged settings (NaN) count
    as ``clip``.

    Args:
        valid_losses: ``[num_tasks, num_settings]`` final validation losses (seed means) on the
            tuning tasks.
        initial_losses: ``[num_tasks]`` validation loss at initialisation.
        clip: as in :func:`normalized`.

    Returns:
        The chosen setting's index.

    Example:
        >>> # setting 1 is best on task 0 but diverges on task 1; setting 0 is good on both.
        >>> select_global([[1.1, 1.0, 1.8], [0.2, float("nan"), 0.5]], initial_losses=[2.0, 1.0])
        0
    """
    losses = _as_float_array("valid_losses", valid_losses, ndim=2)
    initial = _as_float_array("initial_losses", initial_losses, ndim=1)
    if losses.shape[0] != initial.shape[0] or losses.size == 0:
        raise ValueError(f"select_global: valid_losses has shape {losses.shape} but initial_losses has "
                         f"{initial.shape[0]} tasks; give one row of settings per task.")
    best = np.min(_worst_if_nan(losses), axis=1, keepdims=True)
    best = np.where(np.isfinite(best), best, initial[:, None])
    scores = normalized(losses, initial[:, None], best, clip=clip).mean(axis=0)
    return int(np.argmin(scores))


def improvement(candidate, baseline) -> np.ndarray:
    """Per-task improvement of a candidate over a baseline: ``baseline - candidate``.

    Pass task-normalised losses (both normalised per task with the same initial and best loss);
    positive values mean the candidate reached a lower loss (the paper's "learned optimizer
    improvement over baseline").

    Example:
        >>> improvement([0.1, 0.5], [0.3, 0.4]).round(6).tolist()
        [0.2, -0.1]
    """
    cand = _as_float_array("candidate", candidate, ndim=1)
    base = _as_float_array("baseline", baseline, ndim=1)
    if cand.shape != base.shape:
        raise ValueError(f"improvement: candidate has {cand.size} tasks but baseline has {base.size}.")
    return base - cand


def win_fraction(candidate, baseline) -> float:
    """Fraction of tasks on which the candidate's loss is lower (ties count one half).

    NaN (diverged) loses to any number; two NaNs tie.

    Example:
        >>> win_fraction([1.0, 2.0, 3.0, float("nan")], [2.0, 2.0, 1.0, 5.0])
        0.375
    """
    cand = _worst_if_nan(_as_float_array("candidate", candidate, ndim=1))
    base = _worst_if_nan(_as_float_array("baseline", baseline, ndim=1))
    if cand.shape != base.shape or cand.size == 0:
        raise ValueError(f"win_fraction: candidate has {cand.size} tasks and baseline {base.size}; "
                         "give the same, non-zero number of tasks.")
    wins = (cand < base).sum() + 0.5 * (cand == base).sum()
    return float(wins / cand.size)


def median(values: Sequence[float]) -> float:
    """Median that treats ``inf`` as a value (NaNs dropped; NaN if nothing is left).

    Example:
        >>> median([1.0, float("inf"), 3.0, float("nan")])
        3.0
    """
    array = _as_float_array("values", values, ndim=1)
    array = array[~np.isnan(array)]
    return float(np.median(array)) if array.size else math.nan
