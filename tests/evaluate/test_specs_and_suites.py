"""Optimizer specs (names, checkpoints, optax aliases), baselines, and the suites."""

import jax
import numpy as np
import optax
import pytest

import lopt.learned
from lopt.evaluate import (
    OptimizerSpec,
    Suite,
    get_baseline,
    hparams_key,
    make_suite,
    parse_baselines,
    resolve,
    search_spec,
    suite_names,
)
from lopt.evaluate.suites import SMALL_CAPS


def test_resolve_baselines_with_hyperparameters():
    spec = resolve("nadamw:learning_rate=3e-3,nesterov=false")
    assert spec.factory.kind == "baseline" and spec.role == "candidate"
    assert spec.settings[0]["learning_rate"] == 0.003 and spec.settings[0]["nesterov"] is False
    assert spec.label == "nadamw:learning_rate=3e-3,nesterov=false"
    optimizer = spec.factory(spec.settings[0], None, 100)  # total_steps comes from the horizon
    assert isinstance(optimizer, optax.GradientTransformation)


def test_resolve_any_optax_alias():
    spec = resolve("optax.lion")
    assert spec.label == "optax.lion" and spec.settings[0] == {"learning_rate": 0.001}
    assert isinstance(spec.factory(spec.settings[0], None, 10), optax.GradientTransformation)
    assert resolve("optax.sgd:learning_rate=0.5,momentum=0.9").settings[0]["momentum"] == 0.9


def test_resolve_learned_by_name_and_by_checkpoint(tmp_path):
    spec = resolve("learnable_sgdm:lr=0.1")
    assert spec.label == "learnable_sgdm@init" and spec.source["config"]["lr"] == 0.1
    architecture = lopt.learned.get("learnable_adam")
    theta = architecture.init(jax.random.key(1))
    path = lopt.learned.save_theta(tmp_path / "mine.safetensors", architecture, theta)
    loaded = resolve(str(path), label="my-lopt")
    assert loaded.label == "my-lopt" and loaded.source["architecture"] == "learnable_adam"
    assert loaded.source["theta_sha256"] == resolve(str(path)).source["theta_sha256"]
    other = lopt.learned.save_theta(tmp_path / "b.safetensors", architecture, dict(theta, log_lr=theta["log_lr"] + 1))
    assert resolve(str(other)).source["theta_sha256"] != loaded.source["theta_sha256"]


@pytest.mark.parametrize("name, error, message", [
    ("adamz", ValueError, "unknown optimizer"),
    ("optax.nothing", ValueError, "optax has no optimizer"),
    ("adam:learning_rate", ValueError, "NAME=VALUE"),
    ("adam:beta=0.3", ValueError, "beta"),
    ("no/such/theta.safetensors", FileNotFoundError, "does not exist"),
    ("", TypeError, "name or a checkpoint path"),
])
def test_resolve_errors_name_the_problem(name, error, message):
    with pytest.raises(error, match=message):
        resolve(name)


def test_hparams_keys_are_canonical_float32():
    assert hparams_key({"learning_rate": 0.1}) == hparams_key({"learning_rate": np.float32(0.1)})
    assert hparams_key({"b": True, "a": 1e-3}) == '{"a": 0.001, "b": true}'
    with pytest.raises(TypeError, match="scalar"):
        hparams_key({"lr": [1, 2]})


def test_spec_validation():
    factory = resolve("adam").factory
    with pytest.raises(ValueError, match="same hyperparameter names"):
        OptimizerSpec("x", factory, ({"learning_rate": 0.1}, {"b1": 0.9}))
    with pytest.raises(ValueError, match="repeat"):
        OptimizerSpec("x", factory, ({"learning_rate": 0.1}, {"learning_rate": 0.1 + 1e-12}))
    with pytest.raises(ValueError, match="newlines"):
        OptimizerSpec("a\nb", factory)


def test_searches_and_baselines():
    grid = search_spec("adam_lr_grid")
    lrs = [s["learning_rate"] for s in grid.settings]
    assert len(lrs) == 15 and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log(lrs)), np.log(10) * 4 / 14, rtol=1e-4)
    trials = search_spec("nadamw_search", num_trials=5, seed=3)
    assert len(trials.settings) == 5 and trials.keys() == search_spec("nadamw_search", num_trials=5, seed=3).keys()
    assert trials.keys() != search_spec("nadamw_search", num_trials=5, seed=4).keys()
    assert [b.name for b in parse_baselines("all")][:2] == ["adam_global", "adam_per_task"]
    assert parse_baselines("none") == ()
    assert get_baseline("adam8p_global").runs == "adam8p_search"
    with pytest.raises(ValueError, match="num_trials"):
        search_spec("adam8p_search", num_trials=0)


def test_suites_are_deterministic_and_round_trip():
    a = make_suite("iid", num_tasks=5, seed=3)
    assert a == make_suite("iid", num_tasks=5, seed=3)
    assert a.tasks != make_suite("iid", num_tasks=5, seed=4).tasks
    assert Suite.from_dict(a.to_dict()) == a
    assert len({t.id for t in a.tasks}) == 5
    for task in a.tasks:  # the small caps hold
        cfg = task.config
        assert cfg["image_size"] <= SMALL_CAPS["image_size"] and cfg["batch_size"] <= SMALL_CAPS["batch_size"]
        assert all(w <= SMALL_CAPS["width"] for w in cfg["hidden_sizes"])


def test_ood_sweeps_span_the_papers_ranges():
    width = make_suite("ood_width")
    assert [t.sweep[1] for t in width.tasks] == [1, 3, 10, 32, 100, 316, 1000]
    assert len(width.tuning_tasks) == 3 and all(t.config["family"] == "mlp" for t in width.tuning_tasks)
    batch = make_suite("ood_batch")
    sizes = [t.sweep[1] for t in batch.tasks]
    assert sizes[0] == 1 and sizes[-1] == 10_000
    assert batch.tasks[0].eval_batches >= 1024  # batch 1 is still evaluated on >= 1,024 examples
    both = make_suite("ood")
    assert both.sweep_variables() == ["hidden width", "batch size"]
    family = make_suite("ood_family")
    assert {t.config["family"] for t in family.tasks} == {"conv_pooling", "conv_fc", "quadratic"}


def test_suite_options_and_errors():
    assert set(suite_names()) >= {"iid", "ood_width", "ood_batch", "ood_dataset", "ood_family", "quick"}
    suite = make_suite("iid", num_steps=100, num_seeds=2, num_tuning_tasks=2, family="conv_pooling")
    assert suite.eval_every == 5 and suite.num_seeds == 2 and len(suite.tuning_tasks) == 2
    assert all(t.config["family"] == "conv_pooling" for t in suite.tasks + suite.tuning_tasks)
    with pytest.raises(ValueError, match="unknown suite"):
        make_suite("nope")
    with pytest.raises(ValueError, match="num_steps=0"):
        make_suite("iid", num_steps=0)
    with pytest.raises(ValueError, match="Unknown task family"):
        make_suite("iid", family="nope")
