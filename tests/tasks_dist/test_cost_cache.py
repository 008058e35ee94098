"""Task costs on disk: the same catalogue, without the FLOP counts, the second time."""

import glob
import json
from pathlib import Path

import lopt
from lopt.tasks import budget as budget_module
from lopt.tasks import cost_cache
from lopt.tasks.budget import Budget

BUDGET = Budget(max_params=20_000, max_flops=5e7)


def _catalogue():
    dist = lopt.tasks.mixture({"quadratic": 1.0, "mlp": 1.0}, num_structures=3, budget=BUDGET, seed=4)
    return [dict(c) for c in dist.structures()]


def test_a_second_draw_reads_the_costs_and_gives_the_same_catalogue(fresh, monkeypatch):
    first = _catalogue()
    (path,) = glob.glob(str(fresh / "costs-*.json"))
    stored = json.loads(Path(path).read_text())
    assert len(stored) >= 6 and all(len(v) == 2 and v[1] > 0 for v in stored.values())

    def no_counting(*args, **kwargs):
        raise AssertionError("a cached cost was counted again")

    monkeypatch.setattr(cost_cache, "_loaded", {})
    monkeypatch.setattr(budget_module, "_COSTS", {})
    monkeypatch.setattr(budget_module, "_flops", no_counting)
    assert _catalogue() == first


def test_off_unreadable_and_timed_costs(fresh, monkeypatch):
    cfg = {"family": "quadratic", "dim": 5}
    monkeypatch.setenv(cost_cache.COST_CACHE_ENV, "0")
    assert cost_cache.cache_file() is None
    assert cost_cache.cached_cost(BUDGET, cfg, "q5").num_params == 5
    assert not list(fresh.iterdir())

    monkeypatch.setenv(cost_cache.COST_CACHE_ENV, str(fresh))
    path = cost_cache.cache_file()
    Path(path).write_text("{not json")
    cost = cost_cache.cached_cost(BUDGET, cfg, "q5")  # an unreadable file is ignored, then rewritten
    assert json.loads(Path(path).read_text()) == {"q5": [5, cost.flops]}

    timed = Budget(max_seconds=10.0)
    monkeypatch.setattr(cost_cache, "_loaded", {})
    assert cost_cache.cached_cost(timed, {"family": "quadratic", "dim": 6}, "q6").step_seconds > 0
    assert "q6" not in json.loads(Path(path).read_text())  # measured times depend on the machine
