"""Greedy opt_list selection, best-of-k and random-search expectations on synthetic loss tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lopt.optimizers.opt_list import best_of_k, expected_random_best_of_k, greedy_order


def _brute_force_best_subset(table: np.ndarray, k: int) -> tuple[int, ...]:
    scores = {c: table[:, list(c)].min(axis=1).mean() for c in itertools.combinations(range(table.shape[1]), k)}
    return min(scores, key=scores.get)


def test_greedy_picks_known_optimal_ordering():
    # Three task groups, a specialist per group (settings 3, 4, 5) and generalists (0, 1, 2) that are
    # mediocre everywhere. Best single: generalist 0. Best pair and triple: nested, known by construction.
    table = np.array([
        # gen0 gen1 gen2 spA  spB  spC
        [0.30, 0.35, 0.40, 0.00, 0.90, 0.90],
        [0.30, 0.35, 0.40, 0.00, 0.90, 0.90],
        [0.30, 0.35, 0.40, 0.90, 0.05, 0.90],
        [0.30, 0.35, 0.40, 0.90, 0.05, 0.90],
        [0.30, 0.35, 0.40, 0.90, 0.90, 0.10],
        [0.30, 0.35, 0.40, 0.90, 0.90, 0.10],
    ])
    order = greedy_order(table, k=4)
    assert order.tolist() == [0, 3, 4, 5]
    for k in (1, 2):
        assert set(order[:k].tolist()) == set(_brute_force_best_subset(table, k))
    curve = best_of_k(table, order)
    np.testing.assert_allclose(curve, [0.30, (0.0 * 2 + 0.30 * 4) / 6, (0.0 * 2 + 0.05 * 2 + 0.30 * 2) / 6,
                                       (0.0 * 2 + 0.05 * 2 + 0.10 * 2) / 6])


def test_greedy_differs_from_sorting_by_mean():
    # setting 1 has the second-best mean but is redundant with 0; setting 2 complements 0.
    table = np.array([[0.2, 0.25, 1.0], [0.2, 0.25, 1.0], [0.8, 0.75, 0.0]])
    assert np.argsort(table.mean(axis=0)).tolist() == [0, 1, 2]  # means 0.4, 0.417, 0.667
    assert greedy_order(table).tolist() == [0, 2, 1]  # best-of-2: 0.133 with setting 2, 0.383 with 1


def test_greedy_matches_brute_force_step_by_step_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(20):
        table = rng.uniform(0, 1, size=(7, 6))
        order = greedy_order(table)
        assert sorted(order.tolist()) == list(range(6))
        chosen: list[int] = []
        for step in range(6):  # each pick is the argmin of the mean best-of-(step+1) among the rest
            scores = [(np.inf, 0.0, j) if j in chosen else
                      (table[:, chosen + [j]].min(axis=1).mean(), table[:, j].mean(), j) for j in range(6)]
            assert order[step] == min(scores)[2]  # ties: the better single setting, then the lower index
            chosen.append(int(order[step]))
        assert np.all(np.diff(best_of_k(table, order)) <= 1e-12)  # best-of-k never gets worse


def test_nan_is_the_worst_value():
    table = np.array([[np.nan, 0.5], [0.0, 0.5]])
    assert greedy_order(table, k=1).tolist() == [1]
    assert np.isinf(best_of_k(table, [0])[0])


def test_expected_random_best_of_k_matches_enumeration():
    rng = np.random.default_rng(1)
    table = rng.uniform(0, 1, size=(3, 6))
    for k in (1, 2, 3, 6):
        exact = np.mean([table[:, list(c)].min(axis=1).mean() for c in itertools.combinations(range(6), k)])
        np.testing.assert_allclose(expected_random_best_of_k(table, [k]), [exact], rtol=1e-12)


@pytest.mark.parametrize("bad, match", [([1.0, 2.0], "num_tasks, num_settings"), (np.zeros((2, 0)), "non-empty")])
def test_bad_tables_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        greedy_order(bad)


def test_bad_k_raises():
    with pytest.raises(ValueError, match=r"k=5 must be an integer in \[1, 2\]"):
        greedy_order(np.zeros((2, 2)), k=5)
    with pytest.raises(ValueError, match="k=0"):
        expected_random_best_of_k(np.zeros((2, 2)), [0])
    with pytest.raises(ValueError, match="order must be setting indices"):
        best_of_k(np.zeros((2, 2)), [2])


def test_ties_go_to_the_better_single_setting_then_the_lower_index():
    table = np.array([[0.0, 1.0, 0.9, 0.4, 0.5], [1.0, 0.0, 0.9, 0.4, 0.5]])
    order = greedy_order(table)
    # 3 is the best single; 0 and 1 tie as second picks (index decides); after 1 every task is at 0,
    # so 4 and 2 tie on best-of-k: 4 (mean 0.5) goes before 2 (mean 0.9), not index order
    assert order.tolist() == [3, 0, 1, 4, 2]
