"""Mixtures: family weights, structure keys, stackable and bounded buckets, no recompiles."""

from __future__ import annotations

import collections
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import lopt
from lopt.tasks import TaskConfig, structure_key
from lopt.tasks.budget import task_signature
from lopt.tasks.mixture import NOT_IN_TASKSET, Augmentation

sys.path.insert(0, str(Path(__file__).parent))
from dist_helpers import fast_jit, needs_fashion

WEIGHTS = {"quadratic": 1.0, "losg": 2.0, "mlp": 0.5, "nvp": 1.5}


def test_the_mixture_samples_each_family_at_its_weight():
    dist = lopt.tasks.mixture(WEIGHTS, num_structures=4)
    draws = 3000
    counts = collections.Counter(dist.family_of(dist.sample(seed)) for seed in range(draws))
    total = sum(WEIGHTS.values())
    expected = {name: draws * w / total for name, w in WEIGHTS.items()}
    chi_square = sum((counts[n] - e) ** 2 / e for n, e in expected.items())
    assert set(counts) == set(WEIGHTS)
    assert chi_square < 16.27, (counts, expected)  # 3 degrees of freedom, p = 0.001


def test_sampling_is_deterministic_and_configs_are_json():
    dist = lopt.tasks.mixture(WEIGHTS, num_structures=4)
    first = [dist.sample(jax.random.key(s)) for s in range(20)]
    assert first == [dist.sample(jax.random.key(s)) for s in range(20)]
    assert len(set(first)) == 20
    for cfg in first:
        assert TaskConfig.from_json(cfg.to_json()) == cfg
        assert structure_key(cfg) in {structure_key(s) for s in dist.structures(dist.family_of(cfg))}
    # zero weights drop a family
    assert set(lopt.tasks.mixture({"mlp": 1.0, "losg": 0.0}).weights) == {"mlp"}


def _stackable(a, b) -> bool:
    ta, tb = lopt.tasks.build(a), lopt.tasks.build(b)
    try:
        lopt.tasks.stack([ta, tb])
    except ValueError:
        return False
    return task_signature(ta) == task_signature(tb)


@needs_fashion
def test_equal_structure_keys_iff_the_tasks_stack():
    family_configs = []
    for name in ("quadratic", "losg", "mlp", "conv_fc", "mlp_ae", "maf", "augmented", "fixed"):
        family = lopt.tasks.get(name)
        family_configs += [family.sample(s) for s in range(4)]
    dist = lopt.tasks.mixture({"losg": 1.0, "conv_pooling": 1.0, "mlp_vae": 1.0}, num_structures=2)
    for structure in dist.structures():
        family_configs += dist.variants(structure, 0, 3)
    # one value or one per layer spell the same conv structure; the fixed entries are their own
    family_configs += [{"family": "conv_pooling", "dataset": "digits", "image_size": 8, "channels": [8, 8],
                        "strides": 2, "padding": "SAME"},
                       {"family": "conv_pooling", "dataset": "digits", "image_size": 8, "channels": [8, 8],
                        "strides": [2, 2], "padding": ["SAME", "SAME"], "init_scale": 0.5}]
    configs = [lopt.tasks.get(c["family"]).complete(c) for c in family_configs]
    keys = [structure_key(c) for c in configs]
    rng = np.random.default_rng(0)
    same = [(i, j) for i in range(len(configs)) for j in range(i + 1, len(configs)) if keys[i] == keys[j]]
    different = [(i, j) for i in range(len(configs)) for j in range(i + 1, len(configs)) if keys[i] != keys[j]]
    assert len(same) >= 10
    for i, j in same:
        assert _stackable(configs[i], configs[j]), (configs[i], configs[j])
    for index in rng.choice(len(different), size=40, replace=False):
        i, j = different[index]
        assert not _stackable(configs[i], configs[j]), (configs[i], configs[j])


@needs_fashion
def test_buckets_are_stackable_distinct_and_bounded():
    dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0, "mlp": 1.0}, num_structures=3)
    catalogue = {structure_key(s) for s in dist.structures()}
    assert len(catalogue) == len(dist.structures()) <= 9
    seen = set()
    for seed in range(20):
        buckets = dist.buckets(seed, num_buckets=4, configs_per_bucket=5)
        assert len(buckets) == 4 and all(len(b) == 5 for b in buckets)
        for bucket in buckets:
            keys = {structure_key(c) for c in bucket}
            assert len(keys) == 1 and len(set(bucket)) == 5  # one structure, distinct configs
            seen |= keys
        assert len({structure_key(b[0]) for b in buckets}) == 4  # distinct structures while any are left
    assert seen <= catalogue  # however many buckets are drawn, at most len(catalogue) programs
    for bucket in dist.buckets(0, num_buckets=3, configs_per_bucket=4):
        stacked = lopt.tasks.stack([lopt.tasks.build(c) for c in bucket])
        scale = next(v for k, v in stacked.settings.items() if k.endswith("loss_scale"))
        assert scale.shape == (4,)


@fast_jit
def _pool_losses(stacked, key):
    return jax.vmap(lambda t: t.loss(t.init(key), t.sample_batch(key)), in_axes=(lopt.tasks.vmap_axes(stacked),))(
        stacked)


@needs_fashion
def test_redrawn_variants_reuse_the_compiled_program():
    dist = lopt.tasks.mixture({"mlp": 1.0}, num_structures=2)
    structure = dist.structures()[0]
    compiles = _pool_losses._cache_size()
    for seed in range(3):
        bucket = dist.variants(structure, seed, 4)
        losses = _pool_losses(lopt.tasks.stack([lopt.tasks.build(c) for c in bucket]), jax.random.key(0))
        assert np.isfinite(np.asarray(losses)).all()
    assert _pool_losses._cache_size() == compiles + 1


def test_config_counts_are_the_product_of_the_grids():
    augmentation = Augmentation()
    dist = lopt.tasks.mixture({"mlp": 1.0, "quadratic": 1.0}, num_structures=2, augmentation=augmentation)
    per_augmentation = (1 + 3 * augmentation.reparam_seeds) * len(augmentation.loss_scales)
    assert augmentation.num_variants() == per_augmentation == 91
    mlp = 5 * per_augmentation  # five init scales
    quadratic = 5 * 2 * 4 * 3 * 4 * per_augmentation  # condition, rotate, noise, init scale, seed
    assert dist.num_configs() == 2 * mlp + 2 * quadratic
    summary = dist.summary()
    assert summary["structures"] == 4 and summary["configs"] == dist.num_configs()
    plain = lopt.tasks.mixture({"mlp": 1.0}, num_structures=2, augmentation=None)
    assert plain.num_configs() == 2 * 5 and plain.sample(0)["family"] == "mlp"


def test_variants_vary_dynamic_settings_only():
    dist = lopt.tasks.mixture({"losg": 1.0}, num_structures=3)
    for structure in dist.structures():
        variants = dist.variants(structure, 1, 6)
        assert len({structure_key(v) for v in variants} | {structure_key(structure)}) == 1
        assert len({v["task"]["problem"] for v in dist.variants(structure, 2, 40)}) > 1


def test_taskset_covers_every_registered_family():
    dist = lopt.tasks.taskset(budget=None, num_structures=2)
    assert set(dist.weights) == set(lopt.tasks.names()) - set(NOT_IN_TASKSET)
    assert math.isclose(sum(dist.weights.values()), 1.0)


def test_mixture_errors():
    with pytest.raises(ValueError, match="Unknown task family 'resnet'"):
        lopt.tasks.mixture({"resnet": 1.0})
    with pytest.raises(ValueError, match="weight -1"):
        lopt.tasks.mixture({"mlp": -1})
    with pytest.raises(ValueError, match="sum to 0"):
        lopt.tasks.mixture({"mlp": 0.0})
    with pytest.raises(ValueError, match="augmentation="):
        lopt.tasks.mixture({"augmented": 1.0})
    dist = lopt.tasks.mixture({"quadratic": 1.0}, num_structures=2)
    with pytest.raises(ValueError, match="num_buckets=0"):
        dist.buckets(0, 0, 4)
    with pytest.raises(ValueError, match="not in this mixture"):
        dist.structures("mlp")
