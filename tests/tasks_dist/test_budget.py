"""Cost estimates and budgeted sampling."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

import lopt
from lopt.tasks import Budget, BudgetError, TaskCost, estimate_cost, sample_within_budget
from lopt.tasks.budget import task_signature

sys.path.insert(0, str(Path(__file__).parent))
from dist_helpers import needs_fashion


def test_costs_count_params_and_flops_and_are_cached_per_structure():
    cfg = {"family": "mlp", "dataset": "digits", "hidden_sizes": [32], "batch_size": 16}
    cost = estimate_cost(cfg)
    assert cost.num_params == lopt.tasks.build(cfg).num_params() == 64 * 32 + 32 + 32 * 10 + 10
    # forward and weight-gradient matmuls: 2 flops per multiply-add, twice per weight and example
    assert 4 * 16 * (64 * 32 + 32 * 10) <= cost.flops <= 8 * 16 * (64 * 32 + 32 * 10)
    assert cost.step_seconds is None
    # a config of the same structure (other init scale) reuses the cached estimate
    assert estimate_cost({**cfg, "init_scale": 2.0}) == cost
    bigger = estimate_cost({**cfg, "hidden_sizes": [64]})
    assert bigger.num_params > cost.num_params and bigger.flops > cost.flops


def test_step_time_is_measured_once_per_structure():
    cost = estimate_cost({"family": "quadratic", "dim": 4}, timing=True, steps=5, repeats=2)
    assert 0 < cost.step_seconds < 1.0
    assert estimate_cost({"family": "quadratic", "dim": 4, "seed": 9}, timing=True) == cost


def test_signatures_separate_structures():
    a = lopt.tasks.build({"family": "losg", "problem": "booth"})
    b = lopt.tasks.build({"family": "losg", "problem": "rosenbrock", "noise": 0.3})
    c = lopt.tasks.build({"family": "losg", "problem": "quadratic"})
    assert task_signature(a) == task_signature(b) != task_signature(c)


@needs_fashion
@pytest.mark.parametrize("seed", range(5))
def test_budgeted_sampling_respects_the_budget(seed):
    budget = Budget(max_params=5_000, max_flops=2e6)
    cfg = sample_within_budget("mlp", seed, budget, max_tries=200)
    cost = estimate_cost(cfg)
    assert cost.num_params <= 5_000 and cost.flops <= 2e6
    assert sample_within_budget("mlp", seed, budget, max_tries=200) == cfg  # deterministic per key


def test_budgeted_sampling_from_a_mixture_and_a_function():
    dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=4)
    cfg = sample_within_budget(dist, jax.random.key(0), Budget(max_params=40))
    assert estimate_cost(cfg).num_params <= 40
    cfg = sample_within_budget(lambda seed: {"family": "quadratic", "dim": 2 + seed % 50}, 1, Budget(max_params=10))
    assert cfg["dim"] <= 10


def test_budget_errors():
    with pytest.raises(BudgetError, match="none of 3 configs fitted.*smallest had"):
        sample_within_budget("quadratic", 0, Budget(max_params=1), max_tries=3)
    with pytest.raises(ValueError, match="max_params=0"):
        Budget(max_params=0)
    with pytest.raises(TypeError, match="budget must be a Budget"):
        sample_within_budget("quadratic", 0, {"max_params": 5})
    with pytest.raises(TypeError, match="sampler=3"):
        sample_within_budget(3, 0, Budget(max_params=5))
    assert Budget(max_seconds=1e-3).admits(TaskCost(num_params=10 ** 9))  # unmeasured time passes


@needs_fashion
def test_a_budgeted_mixture_keeps_only_structures_within_budget():
    budget = Budget(max_params=3_000)
    dist = lopt.tasks.mixture({"mlp": 1.0, "losg": 1.0}, num_structures=3, budget=budget)
    for structure in dist.structures():
        assert estimate_cost(structure).num_params <= 3_000


def test_recurrent_task_flops_grow_with_the_sequence(tmp_path):
    """The sequence scan counts once per timestep (XLA's cost analysis counted it once in all)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n%\n".join(f"document {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    cfg = {"family": "char_rnn_lm", "corpus": f"text:{corpus}", "cell": "gru", "embed_size": 8,
           "hidden_size": 32, "batch_size": 8}
    short, long = estimate_cost({**cfg, "seq_len": 8}), estimate_cost({**cfg, "seq_len": 32})
    assert short.num_params == long.num_params
    assert 3.5 < long.flops / short.flops < 4.5
    # a GRU step: 3 gates of [embed + hidden] x hidden products, forward and backward
    per_step = 2 * 3 * (8 + 32) * 32 * 8
    assert long.flops > 32 * 2 * per_step
