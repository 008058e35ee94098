"""Catalogue costs in worker processes: the very numbers, and the very catalogue, of one process."""

import logging
import zlib

import numpy as np
import pytest

import lopt
from lopt.tasks import budget as budget_module
from lopt.tasks import cost_cache, cost_workers
from lopt.tasks.budget import Budget
from lopt.tasks.cost_workers import estimate_costs, worker_count

BUDGET = Budget(max_params=20_000, max_flops=5e7)
CONFIGS = [{"family": "quadratic", "dim": 7}, {"family": "mlp", "hidden_sizes": [8], "batch_size": 16}]


def test_workers_answer_what_the_process_computes():
    in_process = [BUDGET.cost(c) for c in CONFIGS]
    assert estimate_costs(BUDGET, CONFIGS, workers=2) == in_process
    assert in_process[0].num_params == 7 and in_process[1].flops > 0


def test_a_config_no_worker_can_build_is_left_to_the_caller():
    bad = {"family": "mlp", "hidden_sizes": [8], "batch_size": 16, "dataset": "no_such_dataset"}
    costs = estimate_costs(BUDGET, [CONFIGS[0], bad], workers=2)
    assert costs[0].num_params == 7 and costs[1] is None
    with pytest.raises(ValueError, match="no_such_dataset"):
        BUDGET.cost(bad)  # the caller then estimates it and raises the real error


def test_bad_settings(monkeypatch):
    with pytest.raises(ValueError, match="max_seconds"):
        estimate_costs(Budget(max_seconds=1.0), CONFIGS, workers=2)
    with pytest.raises(ValueError, match="workers=-1"):
        estimate_costs(BUDGET, CONFIGS, workers=-1)
    monkeypatch.setenv(cost_workers.WORKERS_ENV, "many")
    with pytest.raises(ValueError, match="LOPT_COST_WORKERS='many'"):
        worker_count()
    monkeypatch.setenv(cost_workers.WORKERS_ENV, "3")
    assert worker_count() == 3


def _catalogue():
    dist = lopt.tasks.mixture({"quadratic": 1.0, "mlp": 1.0}, num_structures=4, budget=BUDGET, seed=5)
    return [c.to_dict() for c in dist.structures()], dist.buckets(2, num_buckets=3, configs_per_bucket=2)


def test_a_parallel_draw_finds_the_catalogue_of_a_serial_one(fresh, monkeypatch, caplog):
    serial = _catalogue()
    monkeypatch.setattr(cost_cache, "_loaded", {})
    monkeypatch.setattr(budget_module, "_COSTS", {})
    for path in fresh.iterdir():
        path.unlink()
    monkeypatch.setenv(cost_workers.WORKERS_ENV, "2")
    added = []
    prefetch = cost_cache.prefetch_costs

    def counted(*args, **kwargs):
        added.append(prefetch(*args, **kwargs))
        return added[-1]

    monkeypatch.setattr(lopt.tasks.catalogue, "prefetch_costs", counted)
    with caplog.at_level(logging.INFO, logger="lopt.tasks"):
        assert _catalogue() == serial
    assert sum(added) >= 8  # the workers, not this process, counted the candidates' costs
    assert f"{sum(added)} costs estimated by 2 worker processes" in caplog.text


def _request(index, **task):
    return {"index": index, "flops": True, "config": {"family": "augmented", "task": task}}


def test_data_key_groups_configs_by_what_their_tasks_load():
    key = cost_workers.data_key
    small = {"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [4]}
    assert key({"family": "augmented", "task": small}) == key({**small, "family": "conv_fc", "channels": [3]})
    assert key(small) != key({**small, "image_size": 16})
    assert key({"family": "char_rnn_lm", "corpus": "fortunes", "vocab_size": 64}) != key(
        {"family": "char_rnn_lm", "corpus": "wordnet", "vocab_size": 64})
    assert key({"family": "quadratic", "dim": 3}) == key({"family": "quadratic", "dim": 9}) != key({"family": "losg"})


def test_work_list_spreads_groups_before_sharing_and_keeps_workers_to_theirs():
    items = ([_request(i, family="mlp", dataset="digits") for i in range(4)]
             + [_request(4 + i, family="mlp", dataset="fashion_mnist") for i in range(2)]
             + [_request(6, family="quadratic")])
    work = cost_workers._WorkList(items)
    held = [set(), set(), set()]
    first = [work.take(h)["index"] for h in held]
    assert first == [0, 4, 6]  # three workers, three groups: the largest group first, none shared yet
    assert work.take(held[0])["index"] == 1 and work.take(held[1])["index"] == 5  # each keeps to its group
    assert work.take(held[2])["index"] == 2  # its group ran dry: it helps with the largest one left
    assert len(held[2]) == 2
    taken = [work.take(held[0]), work.take(held[2]), work.take(held[1])]
    assert sorted(t["index"] for t in taken if t) == [3] and work.take(set()) is None


class _NoWorkers:
    def __init__(self, count):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_drawing_ahead_finds_the_one_at_a_time_catalogue_in_few_rounds(monkeypatch):
    rounds = []
    monkeypatch.setattr(lopt.tasks.catalogue, "prefetch_costs", lambda budget, wanted, workers: rounds.append(wanted) or 0)
    monkeypatch.setattr(lopt.tasks.catalogue, "worker_count", lambda: 2)
    monkeypatch.setattr(lopt.tasks.catalogue, "CostWorkers", _NoWorkers)

    def propose(family, rng):
        return {"family": "quadratic", "dim": int(rng.integers(2, 60))}

    budget = Budget(max_params=24)  # about 40% of the candidates fit
    found = lopt.tasks.catalogue.draw_catalogues(["quadratic"], propose, key_of=lambda c: str(c["dim"]),
                                                 num_structures=8, max_tries=20, budget=budget, seed=1)
    rng, reference = np.random.default_rng([1, zlib.crc32(b"quadratic")]), {}
    while len(reference) < 8:  # one candidate at a time
        cfg = propose("quadratic", rng)
        if cfg["dim"] <= 24:
            reference.setdefault(str(cfg["dim"]), cfg)
    assert found["quadratic"] == list(reference.values())
    # 8 candidates, then enough for the rate seen (one candidate per missing structure: 12 rounds)
    assert len(rounds[0]) == 8 and len(rounds) <= 3
