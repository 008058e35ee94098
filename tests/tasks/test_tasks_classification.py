"""The classification loss and accuracy metric, checked by hand on tiny logits."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import ClassificationSpec, ClassificationTask


class FixedLogits(ClassificationTask):
    """A "model" whose logits are its params (ignores the images)."""

    def init(self, key):
        return {"logits": jnp.zeros((3, 3))}

    def logits(self, params, x):
        return params["logits"]


@pytest.fixture
def task():
    return FixedLogits(ClassificationSpec(family="fixed", batch_size=3, input_shape=(1, 1, 1), num_classes=3))


def test_accuracy_and_loss_by_hand(task):
    logits = jnp.array([[2.0, 1.0, 0.0],    # predicts 0
                        [0.0, 0.0, 3.0],    # predicts 2
                        [1.0, 4.0, 1.0]])   # predicts 1
    batch = {"x": jnp.zeros((3, 1, 1, 1)), "y": jnp.array([0, 1, 1])}
    metrics = task.metrics({"logits": logits}, batch)
    assert set(metrics) == {"loss", "accuracy"}
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)

    def nll(row, label):
        return math.log(sum(math.exp(v) for v in row)) - row[label]

    rows = np.asarray(logits).tolist()
    expected = (nll(rows[0], 0) + nll(rows[1], 1) + nll(rows[2], 1)) / 3
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(task.loss({"logits": logits}, batch)) == pytest.approx(expected, rel=1e-6)


def test_uniform_logits_give_log_num_classes(task):
    batch = {"x": jnp.zeros((3, 1, 1, 1)), "y": jnp.array([2, 0, 1])}
    assert float(task.loss(task.init(None), batch)) == pytest.approx(math.log(3), rel=1e-6)


def test_classification_tasks_report_accuracy(task):
    assert task.has_accuracy
