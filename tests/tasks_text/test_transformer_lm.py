"""transformer_lm: builds, starts at ~log(vocab), Adam trains it; held out of taskset; bad configs."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import lopt
from lopt.tasks.mixture import NOT_IN_TASKSET

CFG = {"family": "transformer_lm", "seq_len": 16, "d_model": 32, "num_heads": 2, "num_layers": 2, "batch_size": 16}


def test_initial_loss_is_log_vocab_and_adam_lowers_it():
    task = lopt.tasks.build(CFG)
    assert task.spec.vocab_size > 50 and task.num_params() > 10_000
    curves = lopt.inner.train(task, optax.adam(3e-3), key=jax.random.key(0), num_steps=100, eval_every=100,
                              eval_batches=2)
    train = np.asarray(curves.train_loss)
    log_vocab = np.log(task.spec.vocab_size)
    assert np.isfinite(train).all() and not bool(curves.diverged)
    assert abs(train[0] - log_vocab) < 0.1 * log_vocab  # small logits at init: uniform prediction
    assert abs(float(curves.valid_loss[0]) - log_vocab) < 0.1 * log_vocab
    assert train[-10:].mean() < 0.8 * log_vocab  # unigram statistics alone get well below log(vocab)
    assert float(curves.valid_loss[-1]) < float(curves.valid_loss[0]) - 0.5


def test_attention_is_causal():
    task = lopt.tasks.build(CFG)
    params = task.init(jax.random.key(0))
    tokens = task.sample_batch(jax.random.key(1))["x"]
    changed = tokens.at[:, 10].set((tokens[:, 10] + 1) % task.spec.vocab_size)
    before, after = task.logits(params, tokens), task.logits(params, changed)
    np.testing.assert_allclose(before[:, :10], after[:, :10], rtol=1e-5, atol=1e-6)
    assert not np.allclose(before[:, 10:], after[:, 10:])


def test_init_scale_is_dynamic_and_family_is_held_out_of_taskset():
    family = lopt.tasks.get("transformer_lm")
    a, b = family.complete({**CFG, "init_scale": 0.5}), family.complete({**CFG, "init_scale": 2.0})
    assert lopt.tasks.structure_key(a) == lopt.tasks.structure_key(b)
    wa = lopt.tasks.build(a).init(jax.random.key(0))["head"]["w"]
    wb = lopt.tasks.build(b).init(jax.random.key(0))["head"]["w"]
    np.testing.assert_allclose(4.0 * wa, wb, rtol=1e-6)
    assert "transformer_lm" in NOT_IN_TASKSET
    cfg = family.sample(0)
    assert cfg["d_model"] % cfg["num_heads"] == 0


@pytest.mark.parametrize("bad", [{"num_heads": 3}, {"corpus": "nope"}, {"seq_len": 1}, {"init_scale": 0.0},
                                 {"level": "byte"}])
def test_bad_configs_raise_value_error(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        lopt.tasks.build({**CFG, **bad})
