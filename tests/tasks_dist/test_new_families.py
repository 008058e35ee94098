"""The new families (losg, mlp_ae, mlp_vae, nvp, maf, fixed, augmented): sampling, building, losses."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.tasks import TaskConfig
from lopt.tasks.families import fixed, losg

sys.path.insert(0, str(Path(__file__).parent))
from dist_helpers import NEW_FAMILIES, fast_jit, first_losses, needs_fashion


def _cheap(cfg):
    """The sampled config with a training batch of at most 16 (its structure otherwise kept)."""
    family = lopt.tasks.get(cfg["family"])
    if family.name in ("mlp_ae", "mlp_vae", "nvp", "maf") or (family.name == "losg" and losg.kind_of(
            cfg["problem"]) in ("dataset", "mlp")):
        return family.complete(cfg.replace(batch_size=min(cfg["batch_size"], 16)))
    return cfg


@needs_fashion
@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_twenty_sampled_configs_build_init_and_give_finite_losses(name):
    family = lopt.tasks.get(name)
    configs = [family.sample(seed) for seed in range(20)]
    tasks = [lopt.tasks.build(_cheap(cfg)) for cfg in configs]
    assert all(task.name == name and task.num_params() > 0 for task in tasks)
    losses = np.asarray(first_losses(tasks, jax.random.key(0)))
    assert np.isfinite(losses).all(), [(c, loss) for c, loss in zip(configs, losses) if not np.isfinite(loss)]


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_samplers_are_deterministic_and_configs_round_trip_through_json(name):
    family = lopt.tasks.get(name)
    assert family.sample(11) == family.sample(11)
    assert family.sample(jax.random.key(4)) == family.sample(jax.random.key(4))
    assert len({family.sample(s) for s in range(30)}) > 15
    for cfg in [family.default_config(), *(family.sample(s) for s in range(10))]:
        back = TaskConfig.from_json(cfg.to_json())
        assert back == cfg and hash(back) == hash(cfg)
        assert family.complete(json.loads(cfg.to_json())) == cfg
    assert set(family.defaults()) <= set(family.sampling_ranges())


def _train(task, steps=200, learning_rate=3e-3):
    run = fast_jit(functools.partial(lopt.inner.train, optimizer=optax.adam(learning_rate), num_steps=steps,
                                     eval_every=steps, eval_batches=2))
    curves = run(task, key=jax.random.key(0))
    train = np.asarray(curves.train_loss)
    return train[:5].mean(), train[-20:].mean(), bool(curves.diverged)


@pytest.mark.parametrize("cfg", [
    {"family": "losg", "problem": "quadratic"},
    {"family": "losg", "problem": "least_squares", "dim": 8},
    {"family": "mlp_ae", "dataset": "digits", "batch_size": 32},
    {"family": "mlp_vae", "dataset": "digits", "batch_size": 32},
    {"family": "nvp", "dataset": "digits", "batch_size": 32, "num_layers": 2},
    {"family": "maf", "dataset": "digits", "batch_size": 32, "num_layers": 2},
    {"family": "fixed", "name": "mlp_digits8_32"},
    {"family": "augmented", "task": {"family": "mlp", "dataset": "digits", "batch_size": 32}, "reparam": "per_tensor",
     "reparam_seed": 1, "reparam_range": [0.1, 10.0], "loss_scale": 10.0},
], ids=lambda cfg: cfg["family"] + "-" + str(cfg.get("problem", cfg.get("name", ""))))
def test_adam_lowers_the_loss(cfg):
    start, end, diverged = _train(lopt.tasks.build(cfg))
    assert not diverged and end < 0.8 * start, (cfg, start, end)


def test_losg_2d_functions_reach_their_known_minimum():
    family = lopt.tasks.get("losg")
    argmin = {"rosenbrock": (1, 1), "ackley": (0, 0), "beale": (3, 0.5), "booth": (1, 3), "branin": (np.pi, 2.275),
              "log_sum_exp": (-np.log(2) / 2, 0), "matyas": (0, 0), "michalewicz": (2.18531, 1.570796),
              "styblinski_tang": (-2.903534, -2.903534), "bowl": (0, 0)}
    assert set(argmin) == set(losg.KINDS["function_2d"])
    objective = jax.jit(lambda task, x, key: task.objective({"x": x}, task.sample_batch(key, "valid")))
    for problem, x in argmin.items():
        task = family.build({"problem": problem})
        value = float(objective(task, jnp.asarray(x, jnp.float32), jax.random.key(0)))
        assert value == pytest.approx(losg.MINIMA[problem], abs=1e-4), problem
        # and it is a minimum: nearby points are not lower
        for delta in ([0.01, 0], [0, 0.01], [-0.01, 0], [0, -0.01]):
            nearby = float(objective(task, jnp.asarray(x, jnp.float32) + jnp.asarray(delta), jax.random.key(0)))
            assert nearby >= value - 1e-5, (problem, delta)


def test_losg_problems_of_one_kind_stack_and_vmap():
    family = lopt.tasks.get("losg")
    tasks = [family.build({"problem": p, "seed": i}) for i, p in enumerate(losg.KINDS["function_2d"])]
    stacked = lopt.tasks.stack(tasks)
    losses = jax.vmap(lambda t, k: t.loss(t.init(k), t.sample_batch(k, "valid")),
                      in_axes=(lopt.tasks.vmap_axes(stacked), None))(stacked, jax.random.key(0))
    one = [float(t.loss(t.init(jax.random.key(0)), t.sample_batch(jax.random.key(0), "valid"))) for t in tasks]
    np.testing.assert_allclose(np.asarray(losses), one, rtol=1e-5)


def test_losg_gradient_noise_sparsity_and_log_objective():
    family = lopt.tasks.get("losg")
    key, params = jax.random.key(0), {"x": jnp.asarray([0.5, -1.0])}
    grad = lambda task, split: jax.grad(task.loss)(params, task.sample_batch(key, split))["x"]
    exact = grad(family.build({"problem": "booth"}), "train")
    noisy = family.build({"problem": "booth", "noise": 1.0})
    assert not np.allclose(grad(noisy, "train"), exact) and np.allclose(grad(noisy, "valid"), exact)
    sparse = family.build({"problem": "booth", "sparse_grad": 0.99})
    assert np.count_nonzero(np.asarray(grad(sparse, "train"))) < 2
    logged = family.build({"problem": "booth", "log_objective": True})
    value = float(logged.loss(params, logged.sample_batch(key, "valid")))
    plain = float(family.build({"problem": "booth"}).objective(params, logged.sample_batch(key, "valid")))
    assert value == pytest.approx(np.log(plain + 1e-6) - np.log(1e-6), rel=1e-5)


def test_losg_mlp_2class_and_validation_errors():
    family = lopt.tasks.get("losg")
    task = family.build({"problem": "mlp_2class", "dim": 6, "hidden_sizes": [4, 3], "batch_size": 8})
    assert task.num_params() == 6 * 4 + 4 + 4 * 3 + 3 + 3 + 1
    with pytest.raises(ValueError, match="dim=2"):
        family.build({"problem": "rosenbrock", "dim": 3})
    with pytest.raises(ValueError, match="problem='nope'.*rosenbrock"):
        family.build({"problem": "nope"})
    with pytest.raises(ValueError, match="sparse_grad"):
        family.build({"problem": "booth", "sparse_grad": 1.0})


@pytest.mark.parametrize("name,bad", [
    ("mlp_ae", {"loss": "l1"}), ("mlp_ae", {"latent_size": 0}), ("mlp_vae", {"hidden_sizes": []}),
    ("nvp", {"unit": "nits"}), ("maf", {"num_layers": 0}), ("nvp", {"image_size": 12}),
])
def test_generative_validation_names_the_bad_key(name, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        lopt.tasks.build({"family": name, **bad})


def test_vae_noise_is_part_of_the_batch_and_flows_start_as_identity():
    vae = lopt.tasks.build({"family": "mlp_vae", "dataset": "digits", "batch_size": 4, "latent_size": 3})
    params = vae.init(jax.random.key(0))
    a, b = vae.sample_batch(jax.random.key(1)), vae.sample_batch(jax.random.key(2))
    assert a["eps"].shape == (4, 3) and not np.allclose(a["eps"], b["eps"])
    assert float(vae.loss(params, a)) == float(vae.loss(params, a))  # a pure function of (params, batch)
    for name in ("nvp", "maf"):
        flow = lopt.tasks.build({"family": name, "dataset": "digits", "batch_size": 4, "num_layers": 2,
                                 "hidden_sizes": [70]})
        y = jax.random.normal(jax.random.key(3), (4, 64))
        z, logdet = flow.transform(flow.init(jax.random.key(0)), y)
        np.testing.assert_allclose(z, y, atol=1e-6)  # (MAF reverses the order twice)
        np.testing.assert_allclose(logdet, 0.0, atol=1e-6)


def test_maf_is_autoregressive():
    flow = lopt.tasks.build({"family": "maf", "dataset": "digits", "batch_size": 2, "num_layers": 1,
                             "hidden_sizes": [80], "init_scale": 1.0})
    params = flow.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.1, params)  # make the zero-initialised output layer non-trivial
    y = jax.random.normal(jax.random.key(1), (64,))
    jacobian = jax.jacfwd(lambda v: flow.transform(params, v[None])[0][0][::-1])(y)  # undo the final reversal
    assert np.allclose(np.triu(np.asarray(jacobian), k=1), 0.0)  # output d depends on inputs <= d only


def test_bits_are_nats_over_log_two():
    base = {"family": "nvp", "dataset": "digits", "batch_size": 8, "num_layers": 2}
    nats, bits = lopt.tasks.build(base), lopt.tasks.build({**base, "unit": "bits"})
    params, batch = nats.init(jax.random.key(0)), nats.sample_batch(jax.random.key(1))
    assert float(bits.loss(params, batch)) == pytest.approx(float(nats.loss(params, batch)) / np.log(2), rel=1e-5)


@needs_fashion
def test_fixed_names_cycle_and_build():
    family = lopt.tasks.get("fixed")
    names = fixed.fixed_names()
    assert 10 <= len(names) <= 20 and len(set(names)) == len(names)
    assert [family.sample(i)["name"] for i in range(len(names) + 1)] == [*names, names[0]]
    assert family.complete({"name": "fixed/mlp_digits8_32"}) == family.complete({"name": "mlp_digits8_32"})
    task = lopt.tasks.build({"family": "fixed", "name": "losg_rosenbrock"})
    assert task.name == "fixed" and task.num_params() == 2
    with pytest.raises(ValueError, match="not a fixed task.*quadratic_10"):
        lopt.tasks.build({"family": "fixed", "name": "imagenet"})
    if {"char_rnn_lm", "word_rnn_lm", "rnn_text_classification"} <= set(lopt.tasks.names()):
        assert {"char_rnn_lm_fortunes_lstm64", "word_rnn_lm_wordnet_lstm64"} <= set(names)
