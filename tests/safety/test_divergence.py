"""Honest divergence: a finite run whose loss ends far above its start is reported as blown up."""

import json

import jax
import numpy as np
import optax
import pytest

import lopt
from lopt.cli import main
from lopt.inner import BLOW_UP_FACTOR, Curves


def curves(train, valid):
    train, valid = np.asarray(train, np.float32), np.asarray(valid, np.float32)
    nan = np.full_like(valid, np.nan)
    return Curves(train_loss=train, eval_steps=np.arange(len(valid)), valid_loss=valid, valid_accuracy=nan,
                  test_loss=valid, test_accuracy=nan, diverged=np.asarray(False), diverged_step=np.asarray(-1))


def test_blow_up_rule_against_its_formula():
    assert BLOW_UP_FACTOR == 5.0
    flat = [1.0, 1.0]
    assert not curves([2.0] + [10.0] * 10, flat).blew_up()  # exactly 5x: not above
    assert curves([2.0] + [10.01] * 10, flat).blew_up()
    assert curves([2.0, 1.0], [1.0, 5.01]).blew_up()  # the validation loss alone
    # a negative initial loss: final > initial + 4 |initial|
    assert curves([-1.0] + [3.01] * 10, flat).blew_up() and not curves([-1.0] + [2.99] * 10, flat).blew_up()
    # the final value is the mean of the last 10 finite losses (NaNs skipped)
    assert curves([1.0, 100.0, *[np.nan] * 5, *[4.0] * 9], flat).blew_up()  # (100 + 9 * 4) / 10 = 13.6 > 5
    assert not curves([1.0, *[4.0] * 10, np.nan], flat).blew_up()
    with pytest.raises(ValueError, match="factor=1 must be > 1"):
        curves([1.0], flat).blew_up(factor=1)
    summary = curves([2.0] + [11.0] * 10, [2.0, 2.0]).summary()
    assert summary["blew_up"] and summary["unstable"] and not summary["diverged"]
    assert summary["initial_train_loss"] == 2.0 and summary["final_train_loss"] == 11.0


@pytest.mark.skipif("fashion_mnist" not in lopt.tasks.datasets.available(),
                    reason="the mlp task's default dataset, Fashion-MNIST, is not installed")
def test_adam_at_learning_rate_10_on_the_mlp_task_is_reported():
    """The issue's case (`lopt run` defaults: mlp on 8x8 Fashion-MNIST); ends 2-70x above its start."""
    task = lopt.tasks.build(lopt.tasks.get("mlp").complete({}))
    runs = lopt.inner.train_many(task, lopt.optimizers.adam, {"learning_rate": np.asarray([1e-2, 10.0])},
                                 key=jax.random.key(0), num_seeds=2, num_steps=300, eval_every=150)
    assert not np.asarray(runs.diverged).any()  # finite throughout ...
    np.testing.assert_array_equal(np.asarray(runs.blew_up()), [[False, False], [True, True]])  # ... but blown up
    assert (np.asarray(runs.valid_loss)[1, :, -1] > 20 * np.asarray(runs.valid_loss)[1, :, 0]).all()


@pytest.mark.parametrize(("hparams", "message"), [
    ({"learning_rate": [1e-3, 0.0]}, r"hparams\['learning_rate'\]\[1\]=0 must be finite and > 0"),
    ({"learning_rate": [-1.0]}, r"hparams\['learning_rate'\]\[0\]=-1 must be finite and > 0"),
    ({"learning_rate": [1e-3], "b1": [np.nan]}, r"hparams\['b1'\]\[0\]=nan must be finite"),
    ({"learning_rate": [1e-3, 1e-2], "b1": [0.9, 1.5]}, r"adam: b1=1.5 is outside \[0, 1\)"),  # the factory's own check
])
def test_train_many_checks_hyperparameters_like_optimizers_get(hparams, message):
    task = lopt.tasks.build({"family": "quadratic", "dim": 3})
    with pytest.raises(ValueError, match=message):
        lopt.inner.train_many(task, lopt.optimizers.adam, hparams, key=jax.random.key(0), num_steps=5)
    with pytest.raises(ValueError, match="must be finite and > 0"):  # optax factories get the generic checks
        lopt.inner.train_many(task, optax.sgd, {"learning_rate": [-1.0]}, key=jax.random.key(0), num_steps=5)


def test_lopt_run_reports_blow_up_and_refuses_to_overwrite(tmp_path, capsys):
    argv = ["run", "--task", "quadratic", "--optimizer", "sgd", "--lr", "3", "--steps", "30", "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "BLEW UP: the loss ended more than 5x above where it started" in out and "DIVERGED" not in out
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["summary"]["blew_up"] and not record["summary"]["diverged"] and record["summary"]["unstable"]
    before = (tmp_path / "run.json").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds the results of a `lopt run`" in err and "--overwrite" in err
    assert (tmp_path / "run.json").read_bytes() == before
    assert main([*argv, "--overwrite", "--lr", "0.1"]) == 0
    assert "moved the previous results" in capsys.readouterr().out
    (backup,) = tmp_path.glob("previous-*")
    assert (backup / "run.json").read_bytes() == before
    assert not json.loads((tmp_path / "run.json").read_text())["summary"]["blew_up"]
