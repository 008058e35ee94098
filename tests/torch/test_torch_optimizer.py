"""lopt.torch.LearnedOptimizer as a torch.optim.Optimizer: inputs, groups, closures, dtypes."""

import doctest
import importlib
import importlib.util
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax

import lopt.learned
import lopt.torch
from lopt import checkpoint

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "torch_fashion_mnist.py"


def theta_pair(name, **config):
    lopt_ = lopt.learned.get(name, **config)
    return lopt_.init(jax.random.key(0)), lopt_


def make_params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 2, 3, 3), (6, 5), (5,), ()]
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def quadratic_closure(opt, params):
    def closure():
        opt.zero_grad()
        loss = sum(((p.float() - 0.5) ** 2).sum() for p in params)
        loss.backward()
        return loss.detach()

    return closure


# -- bad inputs ---------------------------------------------------------------------------


def test_learning_rate_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="no learning rate"):
        lopt.torch.LearnedOptimizer(make_params(), theta_pair("mlp"), lr=1e-3)
    with pytest.raises(TypeError, match="no learning rate"):
        lopt.torch.LearnedOptimizer([{"params": make_params(), "lr": 0.1}], theta_pair("mlp"))
    with pytest.raises(TypeError, match="weight_decay"):
        lopt.torch.LearnedOptimizer(make_params(), theta_pair("mlp"), weight_decay=0.1)


def test_parameter_dtypes_it_cannot_step_are_refused_with_the_fix():
    for dtype in (torch.float64, torch.int64):
        params = [torch.nn.Parameter(torch.zeros(3, dtype=dtype), requires_grad=dtype.is_floating_point)]
        with pytest.raises(TypeError, match=f"{dtype}.*model.float"):
            lopt.torch.LearnedOptimizer(params, "default", num_steps=5)


def test_unknown_pretrained_name_and_missing_path():
    with pytest.raises(ValueError, match="no_such_optimizer"):
        lopt.torch.LearnedOptimizer(make_params(), "no_such_optimizer")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        lopt.torch.LearnedOptimizer(make_params(), "runs/missing.safetensors")
    with pytest.raises(TypeError, match="bare theta"):
        lopt.torch.LearnedOptimizer(make_params(), theta_pair("mlp")[0])


def test_theta_that_does_not_fit_its_architecture_is_refused(tmp_path):
    theta, _ = theta_pair("mlp")
    with pytest.raises(ValueError, match="does not match the `mlp`"):
        lopt.torch.LearnedOptimizer(make_params(), (theta, lopt.learned.get("mlp", hidden_size=8)))
    # A file whose header says mlp with hidden_size=8 but holds width-32 tensors.
    path = tmp_path / "wrong.safetensors"
    meta = {"kind": "lopt.theta", "theta_format_version": 1, "architecture": "mlp",
            "config": lopt.learned.get("mlp", hidden_size=8).config(), "extra": {}}
    checkpoint.save_tree(path, theta, meta)
    with pytest.raises(ValueError, match="does not fit"):
        lopt.torch.LearnedOptimizer(make_params(), path)
    # A checkpoint that is not a theta file at all.
    checkpoint.save_tree(tmp_path / "other.safetensors", {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(ValueError, match="not a theta file"):
        lopt.torch.LearnedOptimizer(make_params(), tmp_path / "other.safetensors")


def test_damaged_theta_file_is_refused(tmp_path):
    theta, mlp = theta_pair("mlp")
    path = lopt.learned.save_theta(tmp_path / "theta.safetensors", mlp, theta)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40  # flip one bit inside the last tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="(?i)digest"):
        lopt.torch.LearnedOptimizer(make_params(), path)


def test_architecture_without_port_is_named(tmp_path):
    path = lopt.learned.save_theta(tmp_path / "lstm.safetensors", *reversed(theta_pair("lstm")))
    with pytest.raises(ValueError, match="'lstm' has no PyTorch port"):
        lopt.torch.LearnedOptimizer(make_params(), path)


def test_num_steps_is_checked():
    with pytest.raises(ValueError, match="num_steps=0"):
        lopt.torch.LearnedOptimizer(make_params(), theta_pair("nominal"), num_steps=0)
    with pytest.raises(ValueError, match="pass `num_steps=`"):
        lopt.torch.LearnedOptimizer(make_params(), theta_pair("mlp", fraction_features=True))


def test_state_dict_of_another_architecture_is_refused():
    params = make_params()
    adam = lopt.torch.LearnedOptimizer(params, theta_pair("learnable_adam"))
    quadratic_closure(adam, params)()
    adam.step()
    mlp = lopt.torch.LearnedOptimizer(params, theta_pair("mlp"))
    with pytest.raises(ValueError, match="keeps"):
        mlp.load_state_dict(adam.state_dict())


def test_closure_and_loss_together_is_refused():
    params = make_params()
    opt = lopt.torch.LearnedOptimizer(params, theta_pair("nominal"))
    with pytest.raises(ValueError, match="not both"):
        opt.step(quadratic_closure(opt, params), loss=1.0)


# -- behaviour ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", lopt.torch.names())
def test_closure_returns_loss_and_training_makes_progress(name):
    """At their initial theta, nominal (= Adam) and the learnable rules descend; mlp's initial
    network is untrained, so it only has to give finite steps."""
    params = make_params()
    config = {"lr": 0.05} if name.startswith("learnable") else {}
    opt = lopt.torch.LearnedOptimizer(params, theta_pair(name, **config), num_steps=50)
    closure = quadratic_closure(opt, params)
    initial = closure().item()
    losses = [opt.step(closure).item() for _ in range(50)]
    assert losses[0] == initial  # the closure's loss, before the update
    assert np.all(np.isfinite(losses))
    if name != "mlp":
        assert losses[-1] < 0.95 * losses[0]
    assert all(opt.state[p]["step"] == 50 for p in params)


def test_param_groups_match_one_group_and_carry_their_own_num_steps():
    theta, nominal = theta_pair("nominal")
    theta = {**theta, "schedule": -np.linspace(0.0, 2.0, nominal.schedule_knots, dtype=np.float32)}
    theta = (theta, nominal)
    a, b = make_params(1), make_params(1)
    one = lopt.torch.LearnedOptimizer(a, theta, num_steps=20)
    two = lopt.torch.LearnedOptimizer([{"params": b[:2]}, {"params": b[2:]}], theta, num_steps=20)
    short = make_params(1)
    other = lopt.torch.LearnedOptimizer(
        [{"params": short[:2]}, {"params": short[2:], "num_steps": 3}], theta, num_steps=20
    )
    for opt, ps in ((one, a), (two, b), (other, short)):
        closure = quadratic_closure(opt, ps)
        for _ in range(5):
            opt.step(closure)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(short[0], a[0], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(short[2], a[2])  # the group with num_steps=3 followed its schedule
    assert other.param_groups[1]["num_steps"] == 3


def test_params_without_grad_are_skipped_and_start_their_own_count():
    """A parameter unfrozen later starts at step 0, as if it had its own optimizer."""
    theta = theta_pair("mlp")
    params = make_params(2)
    alone = [torch.nn.Parameter(params[1].detach().clone())]
    opt = lopt.torch.LearnedOptimizer(params, theta)
    opt_alone = lopt.torch.LearnedOptimizer(alone, theta)
    params[1].requires_grad_(False)
    for _ in range(3):
        quadratic_closure(opt, [p for p in params if p.requires_grad])()
        opt.step()
    assert params[1] not in opt.state
    params[1].requires_grad_(True)
    for _ in range(4):
        quadratic_closure(opt, params)()
        opt.step()
        quadratic_closure(opt_alone, alone)()
        opt_alone.step()
    assert opt.state[params[1]]["step"] == 4 and opt.state[params[0]]["step"] == 7
    torch.testing.assert_close(params[1], alone[0], rtol=1e-6, atol=1e-7)
    opt.zero_grad()
    before = [p.detach().clone() for p in params]
    opt.step()  # no gradients: nothing moves
    for p, q in zip(params, before):
        assert torch.equal(p, q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distance_starts_at_the_jax_start_for_the_params_dtype(dtype):
    """The relative start is at least the dtype's resolution (2**-7 for bfloat16), as in JAX."""
    import jax.numpy as jnp

    from lopt.learned import distance

    pair = theta_pair("nominal", step_size="distance", relative_initial_distance=1e-5)
    params = make_params(4, dtype=dtype)
    opt = lopt.torch.LearnedOptimizer(params, pair, num_steps=10)
    opt.step(quadratic_closure(opt, params))
    start = distance.start_distance([jnp.asarray(p.detach().float().numpy()).astype(
        jnp.bfloat16 if dtype == torch.bfloat16 else jnp.float32) for p in params], initial=1e-6, relative=1e-5)
    rms = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params) / sum(p.numel() for p in params)))
    expected = (2.0 ** -7 if dtype == torch.bfloat16 else 1e-5) * rms
    assert float(start) == pytest.approx(expected, rel=1e-5)
    first = opt.state[params[0]]["distance"]  # after one step: the start, or more if the estimate grew
    assert float(first) >= expected * (1 - 1e-5)


@pytest.mark.parametrize("name", ["mlp", "nominal"])
def test_bfloat16_params_train_without_nan_and_keep_float32_state(name, tmp_path):
    params = make_params(3, dtype=torch.bfloat16)
    opt = lopt.torch.LearnedOptimizer(params, theta_pair(name), num_steps=30)
    closure = quadratic_closure(opt, params)
    losses = [opt.step(closure).item() for _ in range(30)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p.float()).all() for p in params)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = lopt.torch.LearnedOptimizer(params, theta_pair(name), num_steps=30)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for p in params:
        for key, value in fresh.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
                assert torch.equal(value, opt.state[p][key]), key


def test_theta_from_a_run_folder_equals_theta_from_the_pair(tmp_path):
    theta, mlp = theta_pair("mlp")
    lopt.learned.save_theta(tmp_path / "theta.safetensors", mlp, theta)
    a, b = make_params(4), make_params(4)
    for opt, ps in (
        (lopt.torch.LearnedOptimizer(a, tmp_path), a),
        (lopt.torch.LearnedOptimizer(b, (theta, mlp)), b),
    ):
        closure = quadratic_closure(opt, ps)
        for _ in range(3):
            opt.step(closure)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)


def test_pretrained_names_load_the_shipped_weights():
    pretrained = pytest.importorskip("lopt.pretrained")
    if not pretrained.names():
        pytest.skip("this lopt ships no pretrained weights yet")
    for name in pretrained.names():
        by_name, by_pair = make_params(5), make_params(5)
        opt = lopt.torch.LearnedOptimizer(by_name, name, num_steps=10)
        ref = lopt.torch.LearnedOptimizer(by_pair, pretrained.load(name), num_steps=10)
        assert opt.architecture == pretrained.load(name)[1]
        losses = [opt.step(quadratic_closure(opt, by_name)).item() for _ in range(10)]
        for _ in range(10):
            ref.step(quadratic_closure(ref, by_pair))
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
        for a, b in zip(by_name, by_pair):
            assert torch.equal(a, b)


def test_cnn_example_trains(tmp_path):
    spec = importlib.util.spec_from_file_location("torch_fashion_mnist", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # nominal at its initial theta is Adam(1e-3): a known-good optimizer for the CNN.
    path = lopt.learned.save_theta(tmp_path / "theta.safetensors", *reversed(theta_pair("nominal")))
    result = example.train(path, steps=40, batch_size=64, log_every=0)
    losses = result["losses"]
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2, losses


@pytest.mark.parametrize(
    "module",
    ["lopt.torch", "lopt.torch.optimizer", "lopt.torch.ops", "lopt.torch.source",
     "lopt.torch.architectures", "lopt.torch.chunks", "lopt.torch.compiled"],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_loss_reaches_architectures_that_read_it(monkeypatch):
    """No ported architecture reads the loss yet; a port that does gets it as a float32 0-d
    tensor on the params' device, from the closure or from ``loss=``, and bad losses fail."""
    params = make_params(6)
    opt = lopt.torch.LearnedOptimizer(params, theta_pair("learnable_sgdm"))
    port = opt._port
    seen = []
    real_update = port.update

    def update(params, grads, states, count, loss, num_steps, positions=None):
        seen.append(loss)
        return real_update(params, grads, states, count, loss, num_steps, positions)

    monkeypatch.setattr(type(port), "needs_loss", True)
    monkeypatch.setattr(port, "update", update)
    closure = quadratic_closure(opt, params)
    with pytest.raises(TypeError, match="reads the training loss"):
        closure()
        opt.step()
    with pytest.raises(ValueError, match="scalar"):
        opt.step(loss=torch.ones(3))
    with pytest.raises(TypeError, match="training loss as a number"):
        opt.step(loss="0.5")
    returned = opt.step(closure)
    opt.step(loss=2.5)
    assert [float(x) for x in seen] == [pytest.approx(float(returned)), 2.5]
    assert all(x.dtype == torch.float32 and x.shape == () for x in seen)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
def test_nominal_masks_its_own_state_without_reading_the_gradients_on_the_host(monkeypatch, state_dtype):
    """The pretrained architecture's state writes keep the old value of every entry a step would
    make non-finite, so the optimizer never stops the device to check the gradients first."""
    import lopt.torch.optimizer as optimizer_module

    def no_host_read(*args):
        raise AssertionError("the gradients were checked on the host")

    monkeypatch.setattr(optimizer_module, "_all_finite", no_host_read)
    params = make_params(seed=3)
    opt = lopt.torch.LearnedOptimizer(params, "default", num_steps=10, state_dtype=state_dtype)
    closure = quadratic_closure(opt, params)
    opt.step(closure)
    before = {id(p): {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params}
    opt.zero_grad()
    closure()
    params[1].grad[2, 3] = float("nan")  # one entry of the (6, 5) matrix
    params[2].grad[0] = float("inf")  # one entry of the vector
    opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    for p in params:
        for key, value in opt.state[p].items():
            if torch.is_tensor(value):
                assert torch.isfinite(value).all(), key
    # the poisoned entries' accumulators did not move; a clean tensor's did
    assert torch.equal(opt.state[params[1]]["momentum"][2, 3], before[id(params[1])]["momentum"][2, 3])
    assert torch.equal(opt.state[params[2]]["rms"][0], before[id(params[2])]["rms"][0])
    assert not torch.equal(opt.state[params[0]]["momentum"], before[id(params[0])]["momentum"])
