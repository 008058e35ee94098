"""A learned optimizer that reads the validation loss gets it on every path that runs it.

The probe below counts the steps that brought a ``valid_loss`` and moves the params only on
those (a plain SGD step), so a path that drops the validation loss leaves the loss where it
started. Paths: ``lopt.inner.train`` and ``iterate`` (``lopt run``), meta-training's unroll, the
trainer's evaluation, the final comparison with Adam, and ``lopt eval``'s ``train_cells``.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt.evaluate import resolve
from lopt.evaluate.runner import train_cells
from lopt.learned import base, registry
from lopt.meta.report import compare_with_adam
from lopt.meta.trainer import MetaTrainer

TASK = {"family": "quadratic", "dim": 4}
STEPS = 20


@dataclasses.dataclass(frozen=True)
class ValidLossProbe(base.LearnedOptimizer):
    """SGD that steps only when given ``valid_loss``; its state counts those steps and keeps the last one."""

    name: ClassVar[str] = "valid_loss_probe"
    needs_loss: ClassVar[bool] = True
    reads_valid_loss: ClassVar[bool] = True

    def init(self, key):
        del key
        return {"log_lr": jnp.log(jnp.float32(0.1))}

    def _build(self, theta, num_steps):
        def init(params):
            del params
            return {"seen": jnp.zeros((), jnp.int32), "last_valid": jnp.zeros((), jnp.float32)}

        def update(grads, state, params, loss, valid_loss):
            del params, loss
            if valid_loss is None:
                return jax.tree.map(jnp.zeros_like, grads), state
            step = jax.tree.map(lambda g: -jnp.exp(theta["log_lr"]) * g, grads)
            return step, {"seen": state["seen"] + 1, "last_valid": valid_loss}

        return base.Transform(init, update)


@pytest.fixture(scope="module")
def probe():
    registry._REGISTRY[ValidLossProbe.name] = ValidLossProbe  # registered for this module only
    yield ValidLossProbe()
    del registry._REGISTRY[ValidLossProbe.name]


@pytest.fixture(scope="module")
def trainer(probe, tmp_path_factory):
    cfg = lopt.meta.load_config("quickstart", [
        "task.family=quadratic", 'task.config={"dim": 4}', f"lopt.name={probe.name}", "estimator.num_tasks=2",
        "estimator.unroll_length=5", "truncation.horizon=20", "normalizer.enabled=false", "trainer.eval_tasks=2",
        f"trainer.eval_steps={STEPS}"])
    return MetaTrainer(cfg, tmp_path_factory.mktemp("run"), progress=False)


def optimizer(probe):
    return probe.optimizer(probe.init(jax.random.key(0)))


def test_the_mark_survives_only_on_the_learned_optimizer(probe):
    assert lopt.learned.reads_valid_loss(optimizer(probe))
    assert not lopt.learned.reads_valid_loss(lopt.learned.get("mlp").optimizer(
        lopt.learned.get("mlp").init(jax.random.key(0)), num_steps=10))


def test_inner_train_and_iterate_pass_the_validation_loss(probe):
    task = lopt.tasks.build(TASK)
    key = jax.random.key(1)
    curves, state = lopt.inner.train(task, optimizer(probe), key=key, num_steps=STEPS, return_state=True)
    assert int(state.opt_state["seen"]) == STEPS
    assert float(curves.train_loss[-1]) < 0.5 * float(curves.train_loss[0])
    # the valid loss is one "valid" batch at the params before the last update
    last = lopt.inner.train(task, optimizer(probe), key=key, num_steps=STEPS - 1, return_state=True)[1]
    valid_key = jax.random.fold_in(jax.random.fold_in(jax.random.split(key, 3)[1], lopt.inner.training.VALID_STREAM),
                                   STEPS - 1)
    expected = task.loss(last.params, task.sample_batch(valid_key, "valid"))
    np.testing.assert_allclose(float(state.opt_state["last_valid"]), float(expected), rtol=1e-6)
    _, off = lopt.inner.train(task, optimizer(probe), key=key, num_steps=STEPS, return_state=True, valid_loss=False)
    assert int(off.opt_state["seen"]) == 0  # the probe does notice a missing valid loss
    *_, (_, _, _, iterated) = lopt.inner.iterate(task, optimizer(probe), key=key, num_steps=STEPS, eval_every=10)
    assert int(iterated.opt_state["seen"]) == STEPS


def test_meta_training_unrolls_pass_it(probe, trainer):
    problem = trainer.setup.estimator.problem
    state = lopt.meta.init_slots(problem, probe.init(jax.random.key(0)), key=jax.random.key(1), num_tasks=1)
    thetas = jax.tree.map(lambda x: x[None, None], probe.init(jax.random.key(0)))
    state, _ = lopt.meta.unroll(problem, thetas, state)
    assert np.all(np.asarray(state.opt_state["seen"]) == problem.unroll_length)


def test_the_trainers_evaluation_passes_it(probe, trainer):
    result = trainer.evaluate(probe.init(jax.random.key(0)), step=0)
    assert result["eval_train_loss"] < 0.5 * float(trainer.setup.estimator.problem.initial_loss[0])


def test_the_final_comparison_passes_it(probe, trainer):
    task = lopt.tasks.build(trainer.setup.task_configs[0])
    comparison = compare_with_adam(probe, probe.init(jax.random.key(0)), task, learning_rates=[0.1],
                                   num_steps=STEPS, num_seeds=2, seed=0, tail=2)
    assert comparison["rows"][0]["mean_last_train_loss"] < 0.5 * float(trainer.setup.estimator.problem.initial_loss[0])


def test_lopt_eval_cells_pass_it(probe):
    task = lopt.tasks.build(TASK)
    curves = train_cells(task, resolve(probe.name), [0], [0], num_steps=STEPS, eval_every=10, eval_batches=1)
    train = np.asarray(curves.train_loss)[0, 0]
    assert train[-1] < 0.5 * train[0]
