"""Adam lowers the loss of every registered family's default config within a few hundred steps."""

import jax
import numpy as np
import optax
import pytest

import lopt


@pytest.mark.parametrize("family", lopt.tasks.names())
def test_adam_lowers_loss(family):
    cfg = dict(lopt.tasks.get(family).default_config())
    if "dataset" in cfg:
        cfg.update(dataset="digits", image_size=8, batch_size=64)
    task = lopt.tasks.build(cfg)
    curves = lopt.inner.train(task, optax.adam(3e-3), key=jax.random.key(0), num_steps=300, eval_every=100)
    train = np.asarray(curves.train_loss)
    assert not bool(curves.diverged)
    assert train[-20:].mean() < 0.7 * train[:5].mean(), (family, train[:5].mean(), train[-20:].mean())
    assert curves.valid_loss[-1] < curves.valid_loss[0]
