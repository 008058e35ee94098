"""The RNN text families: sampling, building, losses, the Task contract, training with Adam."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.tasks import TaskConfig

FAMILIES = ("char_rnn_lm", "word_rnn_lm", "rnn_text_classification")

BAD_VALUES = {
    "corpus": "novels", "cell": "rnn", "embed_size": 0, "hidden_size": 2.5, "seq_len": 1,
    "batch_size": -1, "vocab_size": 0, "init_scale": 0.0,
}


def test_families_are_registered():
    assert set(FAMILIES) <= set(lopt.tasks.names())


@pytest.mark.parametrize("name", FAMILIES)
def test_twenty_sampled_configs_build_init_and_give_finite_losses(name, first_loss):
    family = lopt.tasks.get(name)
    key = jax.random.key(0)
    for seed in range(20):
        cfg = family.sample(seed)
        task = lopt.tasks.build(cfg)
        assert task.name == name and task.num_params() > 0
        assert task.spec.seq_len == cfg["seq_len"] and task.spec.cell == cfg["cell"]
        loss = float(first_loss(task, jax.random.fold_in(key, seed)))
        assert math.isfinite(loss) and loss > 0, (cfg, loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_configs_round_trip_through_json(name):
    family = lopt.tasks.get(name)
    for cfg in [family.default_config(), *(family.sample(s) for s in range(20))]:
        back = TaskConfig.from_json(cfg.to_json())
        assert back == cfg and hash(back) == hash(cfg)
        assert family.complete(json.loads(cfg.to_json())) == cfg
    default = family.default_config()
    assert lopt.tasks.build(TaskConfig.from_json(default.to_json())).spec == family.build(default).spec


@pytest.mark.parametrize("name", FAMILIES)
def test_samplers_are_deterministic_per_seed_and_varied(name):
    family = lopt.tasks.get(name)
    assert family.sample(7) == family.sample(7) == family.sample(np.int64(7))
    assert family.sample(jax.random.key(3)) == family.sample(jax.random.key(3))
    configs = [family.sample(s) for s in range(20)]
    assert len(set(configs)) == 20
    assert {c["cell"] for c in configs} == {"vanilla", "gru", "lstm"}
    assert {c["corpus"] for c in configs} == {"fortunes", "wordnet"}
    assert all(16 <= c["hidden_size"] <= 256 for c in configs)


@pytest.mark.parametrize("name", FAMILIES)
def test_sampling_ranges_document_every_key(name):
    family = lopt.tasks.get(name)
    assert set(family.defaults()) <= set(family.sampling_ranges())
    for seed in range(5):
        assert set(family.sample_config(np.random.default_rng(seed))) <= set(family.defaults())


@pytest.mark.parametrize(("name", "key", "value"),
                         [(n, k, v) for n in FAMILIES for k, v in BAD_VALUES.items()]
                         + [("rnn_text_classification", "level", "byte"),
                            ("rnn_text_classification", "pooling", "max")])
def test_bad_values_are_named(name, key, value):
    with pytest.raises(ValueError, match=f"{key}="):
        lopt.tasks.build({"family": name, key: value})


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown config keys.*'level'"):
        lopt.tasks.build({"family": "char_rnn_lm", "level": "word"})


def test_vocabulary_and_classes_reach_the_spec():
    word = lopt.tasks.build({"family": "word_rnn_lm", "corpus": "fortunes", "vocab_size": 500})
    assert word.spec.vocab_size == 503 and word.spec.level == "word"
    cls = lopt.tasks.build({"family": "rnn_text_classification", "corpus": "wordnet", "level": "char",
                            "vocab_size": None, "seq_len": 32})
    chars = lopt.tasks.datasets.vocabulary("wordnet", "char")
    assert cls.spec.num_classes == 45 and cls.spec.vocab_size == chars.size
    assert 80 < chars.size < 100 and chars.tokens[:3] == ("<pad>", "<unk>", "<eos>")


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_ignores_padding(pooling):
    task = lopt.tasks.build({"family": "rnn_text_classification", "corpus": "fortunes", "seq_len": 8,
                             "pooling": pooling, "batch_size": 2})
    params = task.init(jax.random.key(0))
    short = jnp.array([[5, 6, 7, 0, 0, 0, 0, 0]])
    logits = task.logits(params, short)
    hs = task.hidden_states(params, short[:, :3])
    pooled = hs[:, -1] if pooling == "last" else hs.mean(axis=1)
    np.testing.assert_allclose(logits, pooled @ params["head"]["w"] + params["head"]["b"], rtol=1e-5, atol=1e-6)


def test_language_model_metrics_and_batches():
    task = lopt.tasks.build({"family": "char_rnn_lm", "seq_len": 16, "batch_size": 4})
    batch = task.sample_batch(jax.random.key(0), "test")
    assert batch["x"].shape == batch["y"].shape == (4, 16) and batch["x"].dtype == jnp.int32
    params = task.init(jax.random.key(1))
    metrics = task.metrics(params, batch)
    assert task.has_accuracy and set(metrics) == {"loss", "accuracy"}
    assert abs(float(metrics["loss"]) - math.log(task.spec.vocab_size)) < 1.0  # near uniform at init
    assert float(task.loss(params, batch)) == pytest.approx(float(metrics["loss"]))


@pytest.mark.parametrize("name", ["char_rnn_lm", "rnn_text_classification"])
def test_init_scale_is_a_vmappable_setting(name):
    family = lopt.tasks.get(name)
    cfg = {"corpus": "fortunes", "seq_len": 16, "batch_size": 4, "hidden_size": 8, "embed_size": 4}
    tasks = [family.build({**cfg, "init_scale": s}) for s in (0.5, 1.0, 2.0)]
    stacked = lopt.tasks.stack(tasks)
    assert stacked.settings["init_scale"].shape == (3,)
    loss = jax.jit(jax.vmap(lambda t, k: t.loss(t.init(k), t.sample_batch(k)),
                            in_axes=(lopt.tasks.vmap_axes(stacked), None)))
    losses = loss(stacked, jax.random.key(0))
    singles = [t.loss(t.init(jax.random.key(0)), t.sample_batch(jax.random.key(0))) for t in tasks]
    np.testing.assert_allclose(losses, singles, rtol=1e-4)
    w = [t.init(jax.random.key(0))["rnn"]["w_h"] for t in tasks]
    np.testing.assert_allclose(w[2], 4 * w[0], rtol=1e-6)


def test_data_is_an_argument_not_a_constant():
    task = lopt.tasks.build({"family": "char_rnn_lm", "seq_len": 16, "batch_size": 4, "hidden_size": 8})
    text = jax.jit(lambda t, k: t.loss(t.init(k), t.sample_batch(k))).lower(task, jax.random.key(0)).as_text()
    assert len(text) < 200_000  # the ~76k-character training stream is not baked in


@pytest.mark.parametrize(("name", "steps", "lr"), [("char_rnn_lm", 300, 1e-2), ("word_rnn_lm", 300, 1e-2),
                                                   ("rnn_text_classification", 300, 1e-2)])
def test_adam_lowers_the_training_loss_of_the_default_config(name, steps, lr):
    task = lopt.tasks.get(name).build()
    curves = lopt.inner.train(task, optax.adam(lr), key=jax.random.key(0), num_steps=steps, eval_every=steps)
    losses = np.asarray(curves.train_loss)
    start, end = losses[:10].mean(), losses[-20:].mean()
    assert not bool(curves.diverged)
    assert end < start - 0.5, (name, start, end)
    assert float(curves.valid_loss[-1]) < float(curves.valid_loss[0])
    assert float(curves.valid_accuracy[-1]) > float(curves.valid_accuracy[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_static_config_names_the_structure(name):
    family = lopt.tasks.get(name)
    cfg = family.complete({"corpus": "fortunes", "seq_len": 16, "batch_size": 4, "hidden_size": 8})
    other = cfg.replace(init_scale=2.0)
    assert family.static_config(cfg) == family.static_config(other)
    assert family.static_config(cfg) != family.static_config(cfg.replace(hidden_size=9))
    assert set(family.variation_grid(cfg)) == set(family.dynamic_keys()) == {"init_scale"}
    lopt.tasks.stack([family.build(cfg), family.build(other)])  # equal static configs stack
