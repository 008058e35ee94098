"""Architecture-specific behaviour: reference equivalences, hand-set thetas, config checks."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt.learned
from lopt.learned import (
    HierarchicalLOpt,
    HyperLOpt,
    LearnableAdam,
    LearnableSGDM,
    LSTMLOpt,
    MLPLOpt,
)
from lopt.learned.lstm import preprocess_gradient


def _problem():
    """Three tensors of different shapes and a quadratic loss with different curvatures."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((4,)), jnp.float32),
        "k": jnp.asarray(rng.standard_normal((2, 2, 3, 2)), jnp.float32),
    }
    scales = {
        k: jnp.asarray(rng.uniform(0.5, 3.0, v.shape), jnp.float32) for k, v in params.items()
    }

    def loss(p):
        return sum(jnp.sum(scales[k] * jnp.square(p[k] - 0.5)) for k in p)

    return params, loss


def _trajectory(opt, params, loss_fn, n, **extra_fn):
    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p, loss=loss)
        p = optax.apply_updates(p, u)
        return (p, s), (p, loss)

    _, (ps, losses) = jax.lax.scan(body, (params, opt.init(params)), None, length=n)
    return ps, losses


def test_learnable_adam_reproduces_optax_adam():
    params, loss = _problem()
    lo = LearnableAdam()
    ours = jax.jit(lambda th: _trajectory(lo.optimizer(th), params, loss, 200))(lo.init(None))
    ref = jax.jit(lambda: _trajectory(optax.adam(1e-3), params, loss, 200))()
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(ours[1][-1]) < float(ours[1][0])


def test_learnable_adam_other_hyperparameters_match_optax():
    params, loss = _problem()
    lo = LearnableAdam(lr=0.05, b1=0.8, b2=0.99, eps=1e-6)
    ours = jax.jit(lambda th: _trajectory(lo.optimizer(th), params, loss, 50))(lo.init(None))
    ref = jax.jit(lambda: _trajectory(optax.adam(0.05, 0.8, 0.99, 1e-6), params, loss, 50))()
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_learnable_sgdm_reproduces_optax_sgd_momentum():
    params, loss = _problem()
    lo = LearnableSGDM(lr=0.01, momentum=0.9)
    ours = jax.jit(lambda th: _trajectory(lo.optimizer(th), params, loss, 100))(lo.init(None))
    ref = jax.jit(lambda: _trajectory(optax.sgd(0.01, 0.9), params, loss, 100))()
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_learnable_adam_meta_gradient_points_to_larger_lr_on_short_horizon():
    # With lr=1e-3 and 20 steps on a quadratic far from its minimum, a larger lr helps.
    params, loss = _problem()
    lo = LearnableAdam()

    def meta_loss(theta):
        ps, _ = _trajectory(lo.optimizer(theta), params, loss, 20)
        return loss(jax.tree.map(lambda x: x[-1], ps))

    g = jax.jit(jax.grad(meta_loss))(lo.init(None))
    assert float(g["log_lr"]) < 0


def _hand_set_mlp_theta(lo: MLPLOpt, step_size: float):
    """An MLP theta whose update is -step_size * (normalised momentum at decay 0.9)."""
    sizes = lo.layer_sizes()
    theta = {"mlp": {}}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        theta["mlp"][f"w{i}"] = np.zeros((a, b), np.float32)
        theta["mlp"][f"b{i}"] = np.zeros((b,), np.float32)
    m09 = 2 + lo.decays.index(0.9)  # inputs: g, p, momenta..., time features
    theta["mlp"]["w0"][m09, 0], theta["mlp"]["w0"][m09, 1] = 1.0, -1.0  # relu(x), relu(-x)
    for i in range(1, lo.hidden_layers):
        theta["mlp"][f"w{i}"][0, 0] = theta["mlp"][f"w{i}"][1, 1] = 1.0
    last = lo.hidden_layers
    theta["mlp"][f"w{last}"][0, 0], theta["mlp"][f"w{last}"][1, 0] = 1.0, -1.0  # direction
    # magnitude: exp(bias * exp_mult) * step_mult = step_size
    theta["mlp"][f"b{last}"][1] = math.log(step_size / lo.step_mult) / lo.exp_mult
    return jax.tree.map(jnp.asarray, theta)


def test_mlp_hand_set_theta_trains_quadratic():
    params, loss = _problem()
    lo = MLPLOpt()
    theta = _hand_set_mlp_theta(lo, 0.01)
    _, losses = jax.jit(lambda th: _trajectory(lo.optimizer(th), params, loss, 300))(theta)
    assert np.all(np.isfinite(losses))
    assert float(losses[-1]) < 0.05 * float(losses[0])


def test_mlp_canonical_config_has_19_inputs():
    lo = MLPLOpt()
    assert lo.num_inputs == 19
    assert lo.theta_spec()["mlp"]["w0"].shape == (19, 32)
    assert [lo.theta_spec()["mlp"][f"w{i}"].shape for i in (1, 2)] == [(32, 32), (32, 2)]


def test_mlp_fraction_features_need_num_steps():
    lo = MLPLOpt(fraction_features=True)
    assert lo.num_inputs == 28
    theta = lo.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"num_steps=T"):
        lo.optimizer(theta)
    params = {"w": jnp.ones((3, 2))}

    @jax.jit
    @jax.vmap
    def run(horizon):
        opt = lo.optimizer(theta, num_steps=horizon)
        state = opt.init(params)
        u = None
        for _ in range(3):
            u, state = opt.update(params, state, params)
        return u["w"]

    outs = run(jnp.asarray([10, 1000]))
    assert not np.allclose(outs[0], outs[1])


def test_hyper_requires_num_steps_and_uses_it():
    lo = HyperLOpt(lstm_hidden_size=8, param_inits=4)
    theta = lo.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"num_steps=T"):
        lo.optimizer(theta)
    with pytest.raises(ValueError, match=r"at least 1"):
        lo.optimizer(theta, num_steps=0)
    with pytest.raises(ValueError, match=r"scalar"):
        lo.optimizer(theta, num_steps=jnp.ones(3))
    params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((3, 2)), jnp.float32)}

    @jax.jit
    @jax.vmap
    def run(horizon):
        opt = lo.optimizer(theta, num_steps=horizon)
        state = opt.init(params)._replace(count=jnp.asarray(50, jnp.int32))
        updates, _ = opt.update(params, state, params, loss=1.0)
        return updates

    out = run(jnp.asarray([100, 10_000]))  # 50% vs 0.5% of training done
    assert not np.allclose(out["w"][0], out["w"][1])


def test_hyper_updates_are_relative_to_parameter_scale():
    lo = HyperLOpt(lstm_hidden_size=8, param_inits=4)
    opt = lo.optimizer(lo.init(jax.random.key(1)), num_steps=100)
    rng = np.random.default_rng(0)
    p = {"w": jnp.asarray(rng.standard_normal((6, 4)), jnp.float32), "b": jnp.zeros(4)}
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), p)
    u, _ = jax.jit(lambda g, p: opt.update(g, opt.init(p), p, loss=1.0))(g, p)
    # Steps scale with the tensor's RMS: a zero-initialised tensor barely moves.
    assert float(jnp.max(jnp.abs(u["b"]))) < 1e-3 * float(jnp.max(jnp.abs(u["w"])))
    assert float(jnp.max(jnp.abs(u["w"]))) > 0


def test_hierarchical_reads_the_validation_loss():
    lo = HierarchicalLOpt()
    theta = lo.init(jax.random.key(0))
    params, loss_fn = _problem()
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)

    @jax.jit
    @jax.vmap
    def run(valid_loss):
        opt = lo.optimizer(theta)
        return opt.update(grads, opt.init(params), params, loss=loss, valid_loss=valid_loss)

    updates, state = run(jnp.stack([0.5 * loss, 3.0 * loss]))
    assert state.valid_loss.count.tolist() == [1, 1]
    # A validation loss below or above the training loss changes the update.
    assert not np.allclose(updates["w"][0], updates["w"][1])


def test_valid_loss_passes_through_optax_chain_and_is_optional():
    lo = HierarchicalLOpt()
    opt = optax.chain(optax.identity(), lo.optimizer(lo.init(jax.random.key(0))))
    params = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((3, 2)), jnp.float32)}

    @jax.jit
    def run(p):
        s0 = opt.init(p)
        with_valid = opt.update(p, s0, p, loss=jnp.asarray(1.0), valid_loss=jnp.asarray(2.0))
        without = opt.update(p, s0, p, loss=jnp.asarray(1.0))
        return with_valid, without

    (u_valid, s_valid), (u_none, s_none) = run(params)
    assert int(s_valid[1].valid_loss.count) == 1
    assert int(s_none[1].valid_loss.count) == 0
    assert not np.allclose(u_valid["w"], u_none["w"])


def test_lstm_preprocessing_matches_paper():
    p = 10.0
    g = jnp.asarray([2.0, -0.5, 1e-6, -1e-6, 0.0])
    out = np.asarray(preprocess_gradient(g, p))
    big = np.abs(np.asarray(g)) >= math.exp(-p)
    expected_first = np.where(big, np.log(np.maximum(np.abs(g), 1e-30)) / p, -1.0)
    expected_second = np.where(big, np.sign(g), math.exp(p) * np.asarray(g))
    np.testing.assert_allclose(out[:, 0], expected_first, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], expected_second, rtol=1e-6)
    # Finite derivative at g = 0.
    d = jax.grad(lambda x: jnp.sum(preprocess_gradient(x, p)))(jnp.zeros(3))
    assert np.all(np.isfinite(d))


def test_state_for_other_params_raises():
    for lo in (LSTMLOpt(), HierarchicalLOpt(), HyperLOpt(lstm_hidden_size=8, param_inits=4)):
        opt = lo.optimizer(lo.init(jax.random.key(0)), num_steps=10)
        state = opt.init({"a": jnp.ones(3)})
        params = {"a": jnp.ones(3), "b": jnp.ones(2)}
        with pytest.raises(ValueError, match=r"opt\.init\(params\)"):
            opt.update(params, state, params, loss=1.0)


@pytest.mark.parametrize(
    ("name", "config", "match"),
    [
        ("mlp", {"decays": (0.5, 1.5)}, "decays"),
        ("mlp", {"hidden_size": 0}, "hidden_size"),
        ("mlp", {"step_mult": -1.0}, "step_mult"),
        ("lstm", {"num_layers": 0}, "num_layers"),
        ("hierarchical", {"lstm_hidden_size": 2.5}, "lstm_hidden_size"),
        ("hyper", {"adafactor_decays": (0.9,)}, "adafactor_decays"),
        ("learnable_adam", {"b1": 1.0}, "b1"),
        ("learnable_sgdm", {"lr": 0.0}, "lr"),
    ],
)
def test_bad_config_raises_naming_the_field(name, config, match):
    with pytest.raises(ValueError, match=match):
        lopt.learned.get(name, **config)


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown learned optimizer 'nope'.*'mlp'"):
        lopt.learned.get("nope")
    with pytest.raises(TypeError, match=r"no config field 'bogus'"):
        lopt.learned.get("mlp", bogus=1)
    with pytest.raises(TypeError):
        lopt.learned.register(object)
    with pytest.raises(ValueError, match=r"taken"):

        class Other(MLPLOpt):
            pass

        lopt.learned.register(Other)


def test_json_lists_become_tuples():
    lo = lopt.learned.get("mlp", decays=[0.5, 0.9])
    assert lo.decays == (0.5, 0.9)
    assert hash(lo) == hash(MLPLOpt(decays=(0.5, 0.9)))


def test_cost_figures():
    assert MLPLOpt().state_bytes_per_param() == 24
    assert LSTMLOpt().state_bytes_per_param() == 320
    assert HierarchicalLOpt().state_bytes_per_param() == 40
    assert HyperLOpt().state_bytes_per_param() == 16
    for lo in (MLPLOpt(), LSTMLOpt(), HierarchicalLOpt(), HyperLOpt()):
        assert lo.flops_per_param() > 0


def test_mlp_matches_a_per_tensor_reference_implementation():
    """The batched-over-tensors implementation equals the paper's per-tensor formula."""
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(3))
    params, loss_fn = _problem()
    del loss_fn
    params["s"] = jnp.asarray(0.7)
    rng = np.random.default_rng(5)
    grads = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()}
    decays = np.asarray(lo.decays, np.float32)
    net = theta["mlp"]

    def reference(g, p, step):
        m = (1 - decays) * np.asarray(g)[..., None]  # first step from zero momentum
        x = np.concatenate([np.asarray(g)[..., None], np.asarray(p)[..., None], m], -1)
        x = x / np.sqrt(1e-5 + np.mean(x**2, axis=tuple(range(x.ndim - 1)), keepdims=True))
        t = np.tanh(step / np.asarray(lo.time_scales) - 1.0)
        x = np.concatenate([x, np.broadcast_to(t, (*x.shape[:-1], t.size))], -1)
        h = np.maximum(x @ net["w0"] + net["b0"], 0)
        h = np.maximum(h @ net["w1"] + net["b1"], 0)
        o = h @ net["w2"] + net["b2"]
        return -o[..., 0] * np.exp(o[..., 1] * lo.exp_mult) * lo.step_mult

    opt = lo.optimizer(theta)
    updates, _ = jax.jit(lambda g, p: opt.update(g, opt.init(p), p))(grads, params)
    for k in params:
        np.testing.assert_allclose(
            updates[k], reference(grads[k], params[k], 0.0), rtol=1e-4, atol=1e-9
        )
