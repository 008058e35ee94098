"""Tests of the task distribution (new families, augmentation, budget, mixture, CLI, docs).

Slow tests in this folder are opt-in (``-m slow`` or ``LOPT_RUN_SLOW=1``): see tests/conftest.py.
"""

import pytest

from lopt.tasks import budget as budget_module
from lopt.tasks import cost_cache


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A task-cost cache folder of this test's own, nothing remembered in memory, no shipped costs
    (tests/tasks_dist/test_shipped_costs.py puts them back)."""
    monkeypatch.setenv(cost_cache.COST_CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cost_cache, "SHIPPED_COSTS", str(tmp_path / "no_shipped_costs.json"))
    monkeypatch.setattr(cost_cache, "_loaded", {})
    monkeypatch.setattr(budget_module, "_COSTS", {})
    return tmp_path
