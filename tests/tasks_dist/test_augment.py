"""Augmentation wrappers: function preservation, rescaled gradients, batches, loss scale, bfloat16."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.meta.unroll import MetaProblem
from lopt.tasks import TaskConfig
from lopt.tasks.augment import reparam_scales

sys.path.insert(0, str(Path(__file__).parent))
from dist_helpers import fast_jit

BASES = [
    {"family": "quadratic", "dim": 6},
    {"family": "mlp", "dataset": "digits", "hidden_sizes": [16], "batch_size": 16},
    {"family": "conv_pooling", "dataset": "digits", "image_size": 8, "channels": [4], "batch_size": 8},
    {"family": "nvp", "dataset": "digits", "num_layers": 2, "hidden_sizes": [16], "batch_size": 8},
    {"family": "losg", "problem": "logistic_regression", "dim": 5, "batch_size": 8},
]


@fast_jit
def _loss_at_init(task, key, batch):
    return task.loss(task.init(key), batch)


@pytest.mark.parametrize("mode", ["global", "per_tensor", "per_parameter"])
@pytest.mark.parametrize("base", BASES, ids=lambda cfg: cfg["family"])
def test_reparameterisation_preserves_the_loss_at_init(base, mode):
    inner = lopt.tasks.build(base)
    task = lopt.tasks.reparameterize(inner, mode, low=0.01, high=100.0, seed=3)
    key, batch = jax.random.key(0), inner.sample_batch(jax.random.key(1), "valid")
    assert float(_loss_at_init(task, key, batch)) == pytest.approx(float(_loss_at_init(inner, key, batch)), rel=1e-4)
    scales = jax.tree.leaves(task.scales())
    assert any(float(jnp.max(s)) > 1.5 or float(jnp.min(s)) < 0.7 for s in scales)  # really rescaled


def test_reparameterised_gradients_are_scaled_by_s():
    inner = lopt.tasks.build({"family": "quadratic", "dim": 5})
    task = lopt.tasks.reparameterize(inner, "per_parameter", seed=0)
    batch = inner.sample_batch(jax.random.key(1))
    stored = task.init(jax.random.key(0))
    s = task.scales()["x"]
    np.testing.assert_allclose(stored["x"] * s, inner.init(jax.random.key(0))["x"], rtol=1e-6)
    grad = jax.grad(task.loss)(stored, batch)["x"]
    inner_grad = jax.grad(inner.loss)({"x": stored["x"] * s}, batch)["x"]
    np.testing.assert_allclose(grad, s * inner_grad, rtol=1e-5)


def test_reparam_scales_modes_and_errors():
    shapes = [(3,), (2, 2)]
    assert all(np.all(s == 1) for s in reparam_scales(shapes, "none"))
    glob = reparam_scales(shapes, "global", 0.1, 10.0, seed=1)
    assert len({float(v) for s in glob for v in s.ravel()}) == 1
    per = reparam_scales(shapes, "per_parameter", 0.1, 10.0, seed=1)
    assert all(0.1 <= v <= 10 for s in per for v in s.ravel()) and len({float(v) for v in per[1].ravel()}) == 4
    with pytest.raises(ValueError, match="mode='per_layer'"):
        reparam_scales(shapes, "per_layer")
    with pytest.raises(ValueError, match="low <= high"):
        reparam_scales(shapes, "global", 10.0, 1.0)
    inner = lopt.tasks.build({"family": "quadratic", "dim": 3})
    with pytest.raises(ValueError, match="shape"):
        lopt.tasks.ReparamTask.wrap(inner, [np.ones(4)])


def test_subsample_draws_smaller_training_batches_only():
    inner = lopt.tasks.build({"family": "mlp", "dataset": "digits", "batch_size": 32})
    task = lopt.tasks.subsample(inner, 4)
    assert task.spec.batch_size == 4 and task.has_accuracy
    assert task.sample_batch(jax.random.key(0))["x"].shape[0] == 4
    assert task.sample_batch(jax.random.key(0), "test")["y"].shape == (32,)
    with pytest.raises(ValueError, match="batch_size=32 must be an integer in \\[1, 31\\]"):
        lopt.tasks.subsample(inner, 32)
    with pytest.raises(ValueError, match="subsample first"):
        lopt.tasks.subsample(lopt.tasks.scale_loss(inner, 2.0), 4)


def test_loss_scale_scales_loss_and_reported_loss_not_accuracy():
    inner = lopt.tasks.build({"family": "mlp", "dataset": "digits", "batch_size": 16})
    task = lopt.tasks.scale_loss(inner, 0.01)
    params, batch = inner.init(jax.random.key(0)), inner.sample_batch(jax.random.key(1))
    a, b = task.metrics(params, batch), inner.metrics(params, batch)
    assert float(a["loss"]) == pytest.approx(0.01 * float(b["loss"]), rel=1e-6)
    assert float(a["accuracy"]) == float(b["accuracy"])
    with pytest.raises(ValueError, match="scale=-1"):
        lopt.tasks.scale_loss(inner, -1)


def test_bfloat16_params_train():
    task = lopt.tasks.low_precision(lopt.tasks.build({"family": "quadratic", "dim": 8}))
    params = task.init(jax.random.key(0))
    assert params["x"].dtype == jnp.bfloat16
    run = fast_jit(functools.partial(lopt.inner.train, optimizer=optax.adam(0.05), num_steps=100, eval_every=100,
                                     eval_batches=1))
    curves = run(task, key=jax.random.key(0))
    assert not bool(curves.diverged) and float(curves.valid_loss[-1]) < 0.5 * float(curves.valid_loss[0])


def test_augmented_configs_round_trip_and_stack_across_dynamic_augmentations():
    base = {"family": "mlp", "dataset": "digits", "hidden_sizes": [8], "batch_size": 16}
    options = [("none", 0, 1.0), ("global", 1, 10.0), ("per_tensor", 2, 0.1), ("per_parameter", 3, 3.0)]
    configs = [lopt.tasks.augment(base, reparam=m, reparam_seed=s, loss_scale=x) for m, s, x in options]
    for cfg in configs:
        assert TaskConfig.from_json(cfg.to_json()) == cfg
    assert len({lopt.tasks.structure_key(c) for c in configs}) == 1
    tasks = [lopt.tasks.build(c) for c in configs]
    stacked = lopt.tasks.stack(tasks)
    key = jax.random.key(0)
    losses = jax.vmap(lambda t: t.loss(t.init(key), t.sample_batch(key)), in_axes=(lopt.tasks.vmap_axes(stacked),))(
        stacked)
    np.testing.assert_allclose(losses, [float(t.loss(t.init(key), t.sample_batch(key))) for t in tasks], rtol=1e-5)
    # at init the augmented losses are the base loss times the loss scale
    plain = lopt.tasks.build(base)
    base_loss = float(plain.loss(plain.init(key), plain.sample_batch(key)))
    np.testing.assert_allclose(losses, [base_loss * x for *_, x in options], rtol=1e-4)
    # the meta trainer rebuilds pool members as type(tasks)(spec, data, settings[index])
    problem = MetaProblem(lopt=lopt.learned.get("learnable_sgdm"), tasks=stacked, initial_loss=jnp.ones(4),
                          best_loss=jnp.zeros(4), truncation=lopt.meta.ConstantHorizon(10), unroll_length=5)
    member = problem.task(2)
    assert float(member.loss(member.init(key), member.sample_batch(key))) == pytest.approx(float(losses[2]), rel=1e-5)


def test_static_augmentations_change_the_structure():
    base = {"family": "mlp", "dataset": "digits", "batch_size": 16}
    keys = {lopt.tasks.structure_key(lopt.tasks.augment(base, **o))
            for o in ({}, {"batch_size": 8}, {"precision": "bfloat16"})}
    assert len(keys) == 3
    task = lopt.tasks.build(lopt.tasks.augment(base, batch_size=8, precision="bfloat16"))
    assert task.spec.batch_size == 8 and task.init(jax.random.key(0))[0]["w"].dtype == jnp.bfloat16


def test_augmented_validation_errors():
    with pytest.raises(ValueError, match="reparam='sometimes'"):
        lopt.tasks.augment({"family": "quadratic"}, reparam="sometimes")
    with pytest.raises(ValueError, match="loss_scale=0"):
        lopt.tasks.augment({"family": "quadratic"}, loss_scale=0)
    with pytest.raises(ValueError, match="precision='float16'"):
        lopt.tasks.augment({"family": "quadratic"}, precision="float16")
    with pytest.raises(ValueError, match="must be a task config"):
        lopt.tasks.build({"family": "augmented", "task": "mlp"})
    with pytest.raises(ValueError, match="batch_size=64 must be"):
        lopt.tasks.build(lopt.tasks.augment({"family": "mlp", "dataset": "digits", "batch_size": 32}, batch_size=64))
