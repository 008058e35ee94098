"""The held-out benchmark's hand-designed candidates and result names (benchmarks/pretrained_heldout.py)."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import pretrained_heldout as bench


def test_unknown_hand_designed_optimizer_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'adamw'.*prodigy"):
        bench.HandDesigned("adamw")


@pytest.mark.parametrize("name", ["prodigy", "dog"])
def test_learning_rate_free_candidate_trains_a_quadratic(name):
    task = lopt.tasks.build({"family": "quadratic", "dim": 8})
    label, theta, maker = bench.candidate(bench.parse_args(["--optax", name]))
    assert label == name
    curves = lopt.inner.train(task, maker.optimizer(theta, num_steps=200), key=jax.random.key(0), num_steps=200,
                              eval_every=200, eval_batches=1)
    losses = np.asarray(curves.train_loss)
    assert np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.5 * losses[:5].mean()


def test_candidate_matches_optax_prodigy_step_for_step():
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.cos(params["w"])}
    ours = bench.HandDesigned("prodigy").optimizer(None, num_steps=10)
    import optax.contrib

    reference = optax.contrib.prodigy(1.0)
    u1, _ = ours.update(grads, ours.init(params), params, loss=jnp.float32(1.0))
    u2, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_save_as_names_the_result_file_and_rejects_paths():
    assert bench.parse_args(["--init", "nominal", "--save-as", "heldout_prodigy"]).save_as == "heldout_prodigy"
    with pytest.raises(SystemExit):
        bench.parse_args(["--init", "nominal", "--save-as", "../elsewhere"])
