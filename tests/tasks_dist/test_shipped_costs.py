"""The task costs shipped with lopt: counted again they agree, and a cold draw of the default
``taskset`` catalogue counts nothing."""

import json

import pytest

import lopt
from lopt.tasks import budget as budget_module
from lopt.tasks import cost_cache
from lopt.tasks.mixture import TASKSET_BUDGET

SHIPPED = cost_cache.SHIPPED_COSTS


@pytest.fixture
def shipped(fresh, monkeypatch):
    """A fresh cost cache with the shipped costs in place."""
    monkeypatch.setattr(cost_cache, "SHIPPED_COSTS", SHIPPED)
    return fresh


def test_the_shipped_costs_belong_to_this_code_and_recount_exactly(shipped):
    assert cost_cache.shipped_costs(), (
        f"{SHIPPED} does not match lopt's task code (fingerprint {cost_cache.shipped_fingerprint()}): "
        "run `python scripts/ship_task_costs.py --force` and commit the file")
    sample = cost_cache.shipped_sample()
    families = {json.loads(key)[3][0] for key in sample}  # every key is an augmented structure
    assert len(sample) == 12 and len(families) == 12  # one of every taskset family
    assert cost_cache.check_shipped_costs(sample) == {}


def test_a_cold_draw_of_the_default_catalogue_counts_nothing(shipped, monkeypatch):
    def no_counting(*args, **kwargs):
        raise AssertionError("a shipped cost was counted")

    monkeypatch.setenv("LOPT_COST_WORKERS", "0")
    monkeypatch.setattr(budget_module, "_flops", no_counting)
    structures = lopt.tasks.taskset(seed=0).structures()
    assert len(structures) == 192
    assert not list(shipped.glob("costs-*.json"))  # shipped hits are not copied into the user's cache


def test_shipped_costs_are_ignored_for_other_code_and_with_the_cache_off(shipped, monkeypatch):
    key = min(cost_cache.shipped_costs())
    budget = TASKSET_BUDGET
    counted = []
    monkeypatch.setattr(cost_cache, "_memory", {})
    monkeypatch.setattr(budget_module, "_flops", lambda *a, **k: counted.append(1) or 1.0)
    cfg = {"family": "quadratic", "dim": 3}
    monkeypatch.setenv(cost_cache.COST_CACHE_ENV, "0")  # off: neither the disk cache nor the shipped costs
    assert cost_cache.cached_cost(budget, cfg, key).flops == 1.0 and counted == [1]

    monkeypatch.setenv(cost_cache.COST_CACHE_ENV, str(shipped))
    monkeypatch.setattr(cost_cache, "shipped_fingerprint", lambda: "0" * 16)
    assert cost_cache.shipped_costs() == {}
    with pytest.raises(ValueError, match="ship_task_costs"):
        cost_cache.check_shipped_costs()
    budget_module._COSTS.clear()
    cost_cache.cached_cost(budget, cfg, key)
    assert counted == [1, 1]  # counted, not read from the stale shipped file


def test_check_shipped_costs_reports_a_wrong_count_and_an_unknown_key(shipped, monkeypatch, tmp_path):
    key = min(cost_cache.shipped_costs())
    with open(SHIPPED, encoding="utf-8") as f:
        data = json.load(f)
    data["costs"][key][1] += 1.0
    bad = tmp_path / "costs.json"
    bad.write_text(json.dumps(data))
    monkeypatch.setattr(cost_cache, "SHIPPED_COSTS", str(bad))
    assert list(cost_cache.check_shipped_costs([key])) == [key]
    with pytest.raises(ValueError, match="no shipped cost"):
        cost_cache.check_shipped_costs(["not a key"])
