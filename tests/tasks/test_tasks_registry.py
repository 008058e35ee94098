"""Every registered family: sampling, building, JSON round trips, validation errors."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import lopt
from lopt.tasks import TaskConfig

FAMILIES = lopt.tasks.names()

# A bad value for each validated key, per family; the error must name the key.
BAD_VALUES = {
    "quadratic": {"dim": 0, "condition_number": 0.5, "noise": -1.0, "init_scale": -1.0, "seed": -3,
                  "rotate": "yes"},
    "mlp": {"dataset": "imagenet", "image_size": 13, "batch_size": 0, "activation": "nope",
            "initializer": "zeros", "init_scale": 0.0, "hidden_sizes": [16, 0]},
    "conv_pooling": {"dataset": "imagenet", "image_size": 12, "batch_size": -1, "activation": "nope",
                     "initializer": "zeros", "init_scale": -2.0, "channels": [], "strides": [0, 2],
                     "padding": "FULL", "kernel_size": 0, "use_bias": "yes", "pooling": "sum"},
    "conv_fc": {"dataset": 3, "image_size": True, "batch_size": 2.5, "activation": "nope",
                "initializer": "zeros", "init_scale": "big", "channels": [8, -8], "strides": [1, 2, 2],
                "padding": ["SAME"] * 3, "kernel_size": 1.5, "use_bias": 1, "hidden_sizes": [0]},
}


def test_builtin_families_are_registered():
    assert set(FAMILIES) >= {"quadratic", "mlp", "conv_pooling", "conv_fc"}
    assert set(BAD_VALUES) <= set(FAMILIES)


# Families whose 20 sampled configs are all run in the default (fast) session. Every other
# registered family runs its first 5 there and the rest under `-m slow`, so the folder stays
# fast as families are added; all 20 configs of every family are still built and shape-checked.
CORE_FAMILIES = ("quadratic", "mlp", "conv_pooling", "conv_fc")
NUM_CONFIGS = 20


def _check_sampled_configs(name, seeds, cheap_config, first_loss, *, run):
    family = lopt.tasks.get(name)
    key = jax.random.key(0)
    for seed in seeds:
        cfg = family.sample(seed)
        assert cfg["family"] == name
        # The sampled config itself builds and its loss has the right shape (abstractly).
        task = lopt.tasks.build(cfg)
        assert task.name == name and task.num_params() > 0
        out = jax.eval_shape(lambda t, k: t.loss(t.init(k), t.sample_batch(k)), task, key)
        assert out.shape == () and out.dtype == np.float32
        if not run(seed):
            continue
        # The same structure at a capped cost actually runs.
        cheap = cheap_config(cfg)
        if cheap != cfg:
            task = lopt.tasks.build(cheap)
        loss = float(first_loss(task, jax.random.fold_in(key, seed)))
        assert math.isfinite(loss), (cfg, loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_configs_build_init_and_give_finite_loss(name, cheap_config, first_loss):
    run = (lambda seed: True) if name in CORE_FAMILIES else (lambda seed: seed < 5)
    _check_sampled_configs(name, range(NUM_CONFIGS), cheap_config, first_loss, run=run)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in CORE_FAMILIES])
def test_remaining_sampled_configs_give_finite_loss(name, cheap_config, first_loss):
    _check_sampled_configs(name, range(5, NUM_CONFIGS), cheap_config, first_loss, run=lambda seed: True)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_configs_at_full_size_give_finite_loss(name, first_loss):
    family = lopt.tasks.get(name)
    for seed in range(10):
        loss = float(first_loss(family.build(family.sample(seed)), jax.random.key(seed)))
        assert math.isfinite(loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_configs_round_trip_through_json(name):
    family = lopt.tasks.get(name)
    for cfg in [family.default_config(), *(family.sample(s) for s in range(10))]:
        text = cfg.to_json()
        back = TaskConfig.from_json(text)
        assert back == cfg and hash(back) == hash(cfg)
        assert json.loads(text)["family"] == name
        assert lopt.tasks.get(name).complete(json.loads(text)) == cfg
    default = family.default_config()
    assert lopt.tasks.build(TaskConfig.from_json(default.to_json())).spec == family.build(default).spec


@pytest.mark.parametrize("name", FAMILIES)
def test_samplers_are_deterministic_per_seed(name):
    family = lopt.tasks.get(name)
    assert family.sample(7) == family.sample(7)
    assert family.sample(np.int64(7)) == family.sample(7)
    assert family.sample(jax.random.key(3)) == family.sample(jax.random.key(3))
    assert family.sample(jax.random.key(3)) == family.sample(jax.random.PRNGKey(3))
    assert lopt.tasks.sample(name, 5) == family.sample(5)
    assert len({family.sample(s) for s in range(20)}) > 10
    assert len({family.sample(jax.random.key(s)) for s in range(20)}) > 10


@pytest.mark.parametrize("name", FAMILIES)
def test_sampler_rejects_bad_keys(name):
    with pytest.raises(TypeError, match="key"):
        lopt.tasks.get(name).sample("seed")
    with pytest.raises(TypeError, match="key"):
        lopt.tasks.get(name).sample(1.5)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_config_key_has_documented_sampling_range(name):
    family = lopt.tasks.get(name)
    ranges = family.sampling_ranges()
    assert set(family.defaults()) <= set(ranges), set(family.defaults()) - set(ranges)
    assert all(isinstance(v, str) and v for v in ranges.values())
    for seed in range(5):
        assert set(family.sample_config(np.random.default_rng(seed))) <= set(family.defaults())


@pytest.mark.parametrize("name", FAMILIES)
def test_build_rejects_unknown_keys(name):
    with pytest.raises(ValueError, match="unknown config keys.*'wdith'"):
        lopt.tasks.build({"family": name, "wdith": 3})


@pytest.mark.parametrize("name", FAMILIES)
def test_build_rejects_a_config_of_another_family(name):
    other = next(n for n in FAMILIES if n != name)
    with pytest.raises(ValueError, match=f"{other!r}.*{name!r}"):
        lopt.tasks.get(name).build({"family": other})


@pytest.mark.parametrize(("name", "key", "value"),
                         [(n, k, v) for n, bad in sorted(BAD_VALUES.items()) for k, v in bad.items()])
def test_build_rejects_bad_values_naming_the_key(name, key, value):
    with pytest.raises(ValueError, match=f"{key}="):
        lopt.tasks.build({"family": name, key: value})


def test_build_needs_a_family_key():
    with pytest.raises(ValueError, match="'family'"):
        lopt.tasks.build({"dim": 3})


def test_get_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'resnet'") as err:
        lopt.tasks.get("resnet")
    for name in FAMILIES:
        assert name in str(err.value)


def test_register_rejects_non_families():
    with pytest.raises(TypeError, match="TaskFamily"):
        lopt.tasks.register("mlp")
