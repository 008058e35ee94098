"""The held-out suite: >= 12 tasks, none from the campaign's training families; regression family."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import lopt
from lopt.pretrained import heldout
from lopt.tasks.mixture import NOT_IN_TASKSET


def test_suite_covers_what_it_promises_and_stays_unseen():
    tasks = heldout.suite()
    assert len(tasks) >= 12 and len({t.name for t in tasks}) == len(tasks)
    families = {t.config["family"] for t in tasks}
    assert {"conv_fc", "maf", "word_rnn_lm", "transformer_lm", "regression", "quadratic"} <= families
    steps = [t.num_steps for t in tasks]
    assert min(steps) == 1000 and max(steps) == 10000
    for t in tasks:  # every config is complete and valid for its family (no data loaded)
        lopt.tasks.get(t.config["family"]).complete(t.config)
    assert {"transformer_lm", "regression"} <= set(NOT_IN_TASKSET)
    campaign = [n for n in lopt.tasks.names() if n not in NOT_IN_TASKSET + heldout.CAMPAIGN_HELD_OUT_FAMILIES]
    assert "mlp" in campaign and "transformer_lm" not in campaign
    heldout.check_unseen(campaign)
    with pytest.raises(ValueError, match="maf"):
        heldout.check_unseen(["mlp", "maf"])


def test_steps_scale_and_bad_input():
    assert [t.num_steps for t in heldout.suite(["losg_rosenbrock", "conv_pooling_fashion28"], steps_scale=0.01)] \
        == [100, heldout.MIN_STEPS]
    with pytest.raises(ValueError, match="nope"):
        heldout.suite(["nope"])
    with pytest.raises(ValueError, match="steps_scale"):
        heldout.suite(steps_scale=0)


def test_regression_family_feeds_raw_features_and_adam_fits_them():
    task = heldout.get("regression_diabetes_linear").build()
    batch = task.sample_batch(jax.random.key(0), "train")
    assert float(np.max(batch["x"])) > 50.0  # unscaled: serum values in the hundreds
    assert dict(task.data.info.sizes) == {"train": 342, "valid": 50, "test": 50}
    params = task.init(jax.random.key(1))
    mean_params = jax.tree.map(np.zeros_like, params)
    mean_params[-1]["b"] = np.full((1,), float(np.mean(task.data.splits["train"]["y"])), np.float32)
    full_train = {"x": task.data.splits["train"]["x"], "y": task.data.splits["train"]["y"]}
    np.testing.assert_allclose(float(task.loss(mean_params, full_train)), 1.0, rtol=1e-4)  # mean predictor
    curves = lopt.inner.train(task, optax.adam(0.3), key=jax.random.key(0), num_steps=300, eval_every=300,
                              eval_batches=4)
    assert float(curves.valid_loss[-1]) < 0.8 < float(curves.valid_loss[0])
    with pytest.raises(ValueError, match="table"):
        lopt.tasks.build({"family": "regression", "table": "boston"})
