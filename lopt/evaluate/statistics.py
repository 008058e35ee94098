"""Robust aggregates over tasks: median with interquartile range, interquartile mean, bootstrap CIs.

A handful of tasks with heavy-tailed per-task numbers (speedups of 0.01x and 10x on one suite)
make a plain mean meaningless. Following rliable (Agarwal et al., NeurIPS 2021) and Celo, lopt
reports the **median** (with its interquartile range) and the **interquartile mean** (IQM: the
mean of the middle 50%, robust like the median but less noisy), each with a percentile
**bootstrap confidence interval** over tasks.

Censored values: a speedup the baseline never matched within its steps is only known to exceed
``cap`` (= baseline steps / candidate steps). :func:`aggregate` replaces it by ``cap`` and counts
it, so every statistic is then a lower bound, and says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

__all__ = ["Aggregate", "aggregate", "bootstrap_ci", "interquartile_mean"]


def _values(values) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError("values must be a 1-D array of numbers.") from None
    return array


def interquartile_mean(values) -> float:
    """Mean of the middle 50% of the values (drops ``floor(n / 4)`` from each end; NaNs ignored).

    The same trimming as ``scipy.stats.trim_mean(values, 0.25)`` (rliable's IQM).

    Example:
        >>> interquartile_mean([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 2.5, 3.5])
        2.75
    """
    array = np.sort(_values(values)[~np.isnan(_values(values))])
    if array.size == 0:
        return math.nan
    cut = int(0.25 * array.size)
    return float(np.mean(array[cut:array.size - cut]))


def bootstrap_ci(values, statistic: Callable[[np.ndarray], float], *, num_resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over resampled values.

    Args:
        values: ``[n]`` one number per task (NaNs dropped first).
        statistic: e.g. ``np.median`` or :func:`interquartile_mean`.
        num_resamples: bootstrap resamples (with replacement, size ``n``).
        confidence: e.g. 0.95 for the 2.5th and 97.5th percentiles.
        seed: the resampling seed (the interval is deterministic per seed).

    Returns:
        ``(low, high)``; ``(nan, nan)`` with no values.

    Example:
        >>> low, high = bootstrap_ci(np.arange(100.0), np.median)
        >>> bool(low < 49.5 < high), bool(high - low < 25)
        (True, True)
    """
    array = _values(values)
    array = array[~np.isnan(array)]
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: confidence={confidence!r} must be in (0, 1), e.g. 0.95.")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"bootstrap_ci: num_resamples={num_resamples!r} must be a positive integer.")
    if array.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = array[rng.integers(0, array.size, size=(num_resamples, array.size))]
    stats = np.array([statistic(s) for s in samples], dtype=np.float64)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """Robust summary of one number per task.

    Attributes:
        median, q25, q75: median and interquartile range.
        median_ci: bootstrap CI of the median.
        iqm: interquartile mean.
        iqm_ci: bootstrap CI of the IQM.
        num_values: tasks counted (NaNs excluded).
        num_capped: values that were censored at ``cap`` (the statistics are lower bounds if > 0).
        cap: the censoring bound, or ``None``.
    """

    median: float
    q25: float
    q75: float
    median_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    num_values: int
    num_capped: int = 0
    cap: float | None = None

    @property
    def is_lower_bound(self) -> bool:
        """Whether some value was censored, so the statistics only bound the truth from below."""
        return self.num_capped > 0


def aggregate(values, *, cap: float | None = None, num_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> Aggregate:
    """Median, IQR, IQM and their bootstrap CIs of per-task values; ``+inf`` censored at ``cap``.

    Args:
        values: ``[n]`` per-task numbers; NaN (a diverged candidate) is dropped; ``+inf`` (e.g. a
            speedup the baseline never matched) becomes ``cap`` and is counted in ``num_capped``.
        cap: the value ``+inf`` stands for (required if any value is ``+inf``).
        num_resamples, confidence, seed: as in :func:`bootstrap_ci`.

    Example:
        >>> agg = aggregate([0.5, 1.0, 2.0, float("inf")], cap=4.0)
        >>> agg.median, agg.num_capped, agg.is_lower_bound
        (1.5, 1, True)
    """
    array = _values(values)
    array = array[~np.isnan(array)]
    infinite = np.isposinf(array)
    if infinite.any():
        if cap is None or not math.isfinite(cap):
            raise ValueError("aggregate: some values are +inf; pass cap=<the finite bound they stand for>, "
                             "e.g. baseline steps / candidate steps for a speedup.")
        array = np.where(infinite, cap, array)
    if np.isneginf(array).any():
        raise ValueError("aggregate: values contain -inf; pass finite numbers (or +inf with a cap).")
    if array.size == 0:
        nan2 = (math.nan, math.nan)
        return Aggregate(math.nan, math.nan, math.nan, nan2, math.nan, nan2, 0, 0, cap)
    q25, median, q75 = (float(v) for v in np.percentile(array, [25, 50, 75]))
    options = {"num_resamples": num_resamples, "confidence": confidence, "seed": seed}
    return Aggregate(median, q25, q75, bootstrap_ci(array, np.median, **options), interquartile_mean(array),
                     bootstrap_ci(array, interquartile_mean, **options), int(array.size), int(infinite.sum()), cap)
