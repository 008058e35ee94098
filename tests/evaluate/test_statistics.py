"""Robust aggregates: IQM, bootstrap CIs, censoring at a cap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lopt.evaluate.statistics import aggregate, bootstrap_ci, interquartile_mean


def test_iqm_trims_a_quarter_from_each_end():
    assert interquartile_mean([1, 2, 3, 4]) == 2.5  # n=4: drops one from each end
    assert interquartile_mean(list(range(8)) + [1000.0]) == pytest.approx(np.mean([2, 3, 4, 5, 6]))
    assert interquartile_mean([7.0]) == 7.0
    assert math.isnan(interquartile_mean([]))


def test_bootstrap_ci_is_deterministic_and_covers_the_truth():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 1.0, size=200)
    low, high = bootstrap_ci(values, np.mean, seed=1)
    assert (low, high) == bootstrap_ci(values, np.mean, seed=1)
    assert low < 3.0 < high
    se = values.std() / np.sqrt(values.size)  # the normal-theory interval is about +-1.96 se
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci([2.0, 2.0, 2.0], np.median) == (2.0, 2.0)


def test_aggregate_counts_censored_values_at_the_cap():
    agg = aggregate([0.5, 1.0, 2.0, 3.0, float("inf"), float("nan")], cap=4.0)
    assert agg.num_values == 5 and agg.num_capped == 1 and agg.is_lower_bound
    assert agg.median == 2.0 and (agg.q25, agg.q75) == (1.0, 3.0)
    assert agg.iqm == pytest.approx(2.0)  # n=5 drops one each end: mean of 1, 2, 3
    assert agg.median_ci[0] <= agg.median <= agg.median_ci[1]
    assert not aggregate([1.0, 2.0]).is_lower_bound


@pytest.mark.parametrize("call, match", [
    (lambda: aggregate([1.0, float("inf")]), "cap="),
    (lambda: aggregate([-float("inf")]), "-inf"),
    (lambda: bootstrap_ci([1.0], np.mean, confidence=1.5), "confidence"),
    (lambda: bootstrap_ci([1.0], np.mean, num_resamples=0), "num_resamples"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
