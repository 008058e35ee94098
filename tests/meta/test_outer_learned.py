"""Self-training: a learned optimizer as the outer optimizer (outer.optimizer=pretrained / lopt:PATH)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt.meta.config import MetaTrainConfig, OuterSection
from lopt.meta.outer import learned_outer_optimizer
from lopt.meta.trainer import MetaTrainer, _outer_optimizer

DEFAULT_LR = OuterSection.learning_rate


def small_config(optimizer: str, **outer) -> MetaTrainConfig:
    return MetaTrainConfig.from_dict({
        "name": "test", "seed": 3,
        "task": {"family": "quadratic", "config": {"dim": 8, "condition_number": 20.0}},
        "lopt": {"name": "learnable_sgdm", "config": {"lr": 0.05}},
        "estimator": {"kind": "pes", "num_tasks": 4, "std": 0.05, "unroll_length": 5},
        "truncation": {"kind": "constant", "horizon": 20},
        "normalizer": {"enabled": False},
        "outer": {"optimizer": optimizer, **outer},
        "trainer": {"outer_steps": 6, "eval_every": 0, "eval_tasks": 2, "eval_steps": 20,
                    "checkpoint_every": 100, "checkpoint_minutes": 100.0},
        "final_eval": {"enabled": False},
    })


def leaves(theta):
    return [np.asarray(x) for x in jax.tree.leaves(theta)]


def test_pretrained_outer_optimizer_trains_theta(tmp_path):
    cfg = small_config("pretrained")
    trainer = MetaTrainer(cfg, tmp_path, progress=False)
    start = leaves(trainer.setup.lopt.init(jax.random.key(0)))
    result = trainer.run()
    rows = lopt.meta.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    final = leaves(result["theta"])
    assert all(np.isfinite(x).all() for x in final)
    assert any(not np.allclose(a, b) for a, b in zip(start, final))  # theta moved
    steps = [np.abs(a - b).max() for a, b in zip(start, final)]
    assert max(steps) < 1.0  # a learned optimizer's few steps on two scalars stay moderate


def test_lopt_file_outer_matches_the_baseline_it_reproduces(tmp_path):
    """A learnable-Adam theta file at its initial theta is Adam: both runs follow one trajectory."""
    path = tmp_path / "outer_adam.safetensors"
    adam_lopt = lopt.learned.get("learnable_adam", lr=DEFAULT_LR)
    lopt.learned.save_theta(path, adam_lopt, adam_lopt.init(jax.random.key(0)))
    learned = MetaTrainer(small_config(f"lopt:{path}"), tmp_path / "learned", progress=False).run()
    baseline = MetaTrainer(small_config("adam", learning_rate=DEFAULT_LR), tmp_path / "adam", progress=False).run()
    for a, b in zip(leaves(learned["theta"]), leaves(baseline["theta"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(leaves(learned["theta"]),
                                                     leaves(lopt.learned.get("learnable_sgdm", lr=0.05).init(jax.random.key(0)))))


def test_pretrained_outer_update_follows_the_horizon_and_clips_the_gradient():
    theta = {"a": jnp.linspace(-1.0, 1.0, 6), "b": jnp.asarray(0.5)}
    grad = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), theta)
    huge = jax.tree.map(lambda g: 1e3 * g, grad)  # clipped back to `grad` by clip_grad_norm=norm
    norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grad))))

    def last_update(num_steps, grads, clip=0.0):
        cfg = small_config("pretrained", clip_grad_norm=clip).to_dict()
        cfg = MetaTrainConfig.from_dict({**cfg, "trainer": {**cfg["trainer"], "outer_steps": num_steps}})
        opt = _outer_optimizer(cfg)  # what MetaTrainer uses; the trainer passes the meta-loss as loss=
        state = opt.init(theta)
        for g in grads:  # theta held fixed: only the optimizer's state and step count move
            updates, state = opt.update(g, state, theta, loss=jnp.asarray(1.0))
        return np.concatenate([np.ravel(u) for u in jax.tree.leaves(updates)])

    late = last_update(20, [grad] * 20)  # the last step of a 20-step horizon, vs the same step of 10,000
    assert np.isfinite(late).all() and np.abs(late).max() > 0
    assert not np.allclose(late, last_update(10_000, [grad] * 20))  # the horizon is trainer.outer_steps
    clean = last_update(100, [grad, grad])
    np.testing.assert_allclose(last_update(100, [huge, grad], clip=norm), clean, rtol=1e-5)
    assert not np.allclose(last_update(100, [huge, grad]), clean)  # unclipped, the spike changes step 2


@pytest.mark.parametrize(("spec", "lr", "match"), [
    ("pretrained:nope", DEFAULT_LR, "unknown pretrained optimizer 'nope'"),
    ("lopt:", DEFAULT_LR, "names no file"),
    ("lopt:/no/such/theta.safetensors", DEFAULT_LR, "no theta file"),
    ("pretrained", 1e-3, r"outer.learning_rate=0.001 has no effect.*remove the outer.learning_rate override"),
])
def test_bad_learned_outer_specs_raise(spec, lr, match):
    with pytest.raises(ValueError, match=match):
        learned_outer_optimizer(spec, num_steps=10, learning_rate=lr, default_learning_rate=DEFAULT_LR)


def test_bad_spec_is_rejected_when_building_the_trainer(tmp_path):
    with pytest.raises(ValueError, match="outer.learning_rate"):
        MetaTrainer(small_config("pretrained", learning_rate=0.05), tmp_path, progress=False)


def test_learnable_sgd_outer_optimizer_is_sgd_on_theta_step_for_step(tmp_path):
    """A learnable-SGD theta file (known lr and momentum) as outer optimizer is optax.sgd on theta, clipping included."""
    import optax

    path = tmp_path / "outer_sgd.safetensors"
    sgd_lopt = lopt.learned.get("learnable_sgdm", lr=0.02, momentum=0.5)
    lopt.learned.save_theta(path, sgd_lopt, sgd_lopt.init(jax.random.key(0)))
    cfg = small_config(f"lopt:{path}")
    learned = _outer_optimizer(cfg)
    reference = optax.chain(optax.clip_by_global_norm(cfg.outer.clip_grad_norm), optax.sgd(0.02, momentum=0.5))
    theta = {"log_lr": jnp.asarray(-3.0), "w": jnp.ones((3, 2))}
    s_learned, s_reference = learned.init(theta), reference.init(theta)
    for step in range(5):
        grad = jax.tree.map(lambda x, k=step: jax.random.normal(jax.random.key(k), x.shape) * (0.3 + k), theta)
        u_learned, s_learned = learned.update(grad, s_learned, theta, loss=jnp.asarray(1.0 / (step + 1)))
        u_reference, s_reference = reference.update(grad, s_reference, theta)
        for a, b in zip(leaves(u_learned), leaves(u_reference)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
        theta = optax.apply_updates(theta, u_learned)
