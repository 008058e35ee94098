"""Set-up worker processes: they fill the caches the run then reads, and never change its numbers."""

import json
import logging

import jax
import numpy as np
import pytest

import lopt
from lopt.meta import prewarm as prewarm_module
from lopt.meta.program_cache import available
from lopt.meta.trainer import build_setup

pytestmark = pytest.mark.skipif(not available(), reason="jax.export serialisation needs the flatbuffers package")


def _config(cache_dir):
    cfg = lopt.meta.load_config("taskset", [
        'task.mixture={"quadratic": 1, "losg": 1}', "task.num_buckets=2", "task.configs_per_bucket=2",
        "task.redraw_every=2", "lopt.name=learnable_sgdm", 'lopt.config={"lr": 0.05}', "estimator.num_tasks=2",
        "estimator.std=0.05", "estimator.unroll_length=5", "truncation.kind=constant", "truncation.horizon=10",
        "normalizer.num_steps=10", "trainer.eval_every=0"])
    cfg.normalizer.cache_dir = str(cache_dir)
    return cfg


def _estimate(engine):
    theta = engine.lopt.init(jax.random.key(0))
    return engine.estimate(theta, engine.init(theta, key=jax.random.key(1)), key=jax.random.key(2))


def test_workers_set_up_every_structure_and_the_run_computes_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv(prewarm_module.WORKERS_ENV, "0")
    reference = build_setup(_config(tmp_path / "alone")).engine
    reference.wait_for_programs()
    assert reference.program_cache.misses == 4  # 2 fit programs + 2 bucket programs, made by the run

    monkeypatch.setenv(prewarm_module.WORKERS_ENV, "2")
    monkeypatch.setenv(prewarm_module.LOGS_ENV, str(tmp_path / "logs"))
    warmed = build_setup(_config(tmp_path / "warmed")).engine
    warmed.wait_for_programs()
    # the two workers (one structure each) fitted and exported everything: the run made nothing
    assert warmed.fits_from_cache == 2
    assert (warmed.program_cache.misses, warmed.program_cache.hits) == (0, 2)
    assert warmed._first_fits == reference._first_fits
    assert len(list((tmp_path / "warmed").glob("prewarm-*.json"))) == 1
    assert (warmed.prewarm_report.workers, warmed.prewarm_report.failed) == (2, 0)
    assert reference.prewarm_report.workers == 0
    # each worker reported its phases, which add up to its time and fit in the prewarm's wall time
    phases = sorted(warmed.prewarm_report.phases, key=lambda p: p["buckets"])
    assert [p["buckets"] for p in phases] == [[0], [1]]
    for p in phases:
        assert min(p["startup"], p["engine"], p["programs"]) >= 0
        assert abs(p["startup"] + p["engine"] + p["programs"] - p["total"]) < 0.05
        assert p["startup"] > 0 and p["total"] <= warmed.prewarm_report.seconds + 0.5
    assert warmed.prewarm_report.slowest() == max(phases, key=lambda p: p["total"])
    # the kept logs: one folder for the call, each worker's log ending with the phases it reported
    (kept,) = (tmp_path / "logs").iterdir()
    for w in range(2):
        last = (kept / f"worker-{w}.log").read_text().splitlines()[-1]
        assert last.startswith("[prewarm worker] phases ") and json.loads(last.split(" phases ", 1)[1]) in phases
    for a, b in zip(jax.tree.leaves(_estimate(reference)), jax.tree.leaves(_estimate(warmed))):
        np.testing.assert_array_equal(a, b)

    # the record says the caches are warm: a second run starts no worker
    def no_workers(*args, **kwargs):
        raise AssertionError("a worker was started for a request already done")

    monkeypatch.setattr(prewarm_module.subprocess, "Popen", no_workers)
    again = build_setup(_config(tmp_path / "warmed")).engine
    again.wait_for_programs()
    assert (again.fits_from_cache, again.program_cache.misses) == (2, 0)
    assert again.prewarm_report.workers == 0 and again.prewarm_report.record is not None


def test_a_failing_worker_is_reported_and_the_run_sets_up_its_structures_itself(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(prewarm_module.WORKERS_ENV, "2")
    monkeypatch.setattr(prewarm_module.sys, "executable", "false")  # every worker exits with status 1
    with caplog.at_level(logging.WARNING, logger="lopt.meta"):
        engine = build_setup(_config(tmp_path)).engine
        engine.wait_for_programs()
    assert caplog.text.count("exited with status 1") == 2
    assert (engine.prewarm_report.workers, engine.prewarm_report.failed) == (2, 2)
    assert engine.prewarm_report.phases == () and engine.prewarm_report.slowest() is None
    assert engine.fits_from_cache == 0 and engine.program_cache.misses == 4
    assert not list(tmp_path.glob("prewarm-*.json"))  # not marked done: the next run tries again


def test_the_worker_count_setting_is_checked(monkeypatch):
    monkeypatch.setenv(prewarm_module.WORKERS_ENV, "many")
    with pytest.raises(ValueError, match="LOPT_PREWARM_WORKERS"):
        prewarm_module.prewarm_worker_count(4)
    monkeypatch.setenv(prewarm_module.WORKERS_ENV, "8")
    assert prewarm_module.prewarm_worker_count(3) == 3  # never more workers than structures


def test_workers_past_the_time_limit_are_stopped_and_the_request_stays_open(tmp_path):
    cfg = _config(tmp_path)
    structures = lopt.tasks.mixture({"quadratic": 1, "losg": 1}, seed=cfg.seed).buckets(cfg.seed, 2, 1)
    report = prewarm_module.prewarm(cfg, [b[0] for b in structures], workers=2, timeout_s=0.1)
    assert (report.workers, report.failed, report.record) == (2, 2, None)  # killed (after ~1 s), not waited for
    assert report.seconds < 20 and not list(tmp_path.glob("prewarm-*.json"))


def test_datasets_are_loaded_beside_the_workers_and_a_bad_structure_is_left_to_the_engine(caplog):
    from lopt.meta.prewarm import load_datasets_beside
    from lopt.tasks.datasets import catalog

    catalog._load_resized.cache_clear()
    structures = [{"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [4]},
                  {"family": "mlp", "dataset": "no_such_dataset"}]
    with caplog.at_level(logging.INFO, logger="lopt.meta"):
        thread = load_datasets_beside(structures)
        thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert catalog._load_resized.cache_info().currsize == 1  # digits at 8x8, loaded in this process
    assert "datasets of 2 structures loaded beside the workers" in caplog.text
    with pytest.raises(ValueError, match="no_such_dataset"):  # the engine's own build still raises
        lopt.tasks.build(structures[1])
