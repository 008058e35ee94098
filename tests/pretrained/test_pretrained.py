"""The shipped pretrained optimizer: offline loading, optax conformance, no hyperparameters, stability."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_loads_offline_from_the_installed_package():
    code = ("import lopt, json; theta, l = lopt.pretrained.load(); "
            "print(json.dumps([l.name, str(lopt.pretrained.path()).endswith('weights/default.safetensors')]))")
    env = dict(os.environ, NO_PROXY="*", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '["nominal", true]'


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="default"):
        lopt.pretrained.optimizer("nope")


def _mlp_problem(dtype):
    key = jax.random.key(0)
    x = jax.random.normal(key, (64, 5))
    y = jnp.sin(x @ jnp.arange(1.0, 6.0))[:, None]
    params = {"w1": jax.random.normal(jax.random.key(1), (5, 16)) * 0.5, "b1": jnp.zeros(16),
              "w2": jax.random.normal(jax.random.key(2), (16, 1)) * 0.25, "b2": jnp.zeros(1)}
    params = jax.tree.map(lambda p: p.astype(dtype), params)

    def loss(p):
        p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)

    return params, loss


def _run(opt, params, loss, steps):
    """Pure: ``steps`` optimizer steps in one ``lax.scan``; returns params and the loss curve."""
    def step(carry, _):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p)
        u, s = opt.update(grads, s, p, loss=value)
        return (optax.apply_updates(p, u), s), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params, losses


def _train(opt, params, loss, steps):
    params, losses = jax.jit(lambda p: _run(opt, p, loss, steps))(params)
    return params, np.asarray(losses)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_trains_a_model_with_no_hyperparameters(dtype):
    params, loss = _mlp_problem(dtype)
    new, losses = _train(lopt.pretrained.optimizer(num_steps=300), params, loss, 300)
    assert all(a.dtype == dtype for a in jax.tree.leaves(new))
    assert np.all(np.isfinite(losses)) and losses[-20:].mean() < 0.5 * losses[0]


def test_vmap_over_problems_matches_single_runs():
    params, loss = _mlp_problem(jnp.float32)
    opt = lopt.pretrained.optimizer(num_steps=50)
    batch = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
    vmapped = jax.jit(jax.vmap(lambda p: _run(opt, p, loss, 20)[0]))(batch)
    single, _ = _train(opt, jax.tree.map(lambda p: 2 * p, params), loss, 20)
    for a, b in zip(jax.tree.leaves(vmapped), jax.tree.leaves(single)):
        np.testing.assert_allclose(a[1], b, rtol=2e-3, atol=1e-5)


def test_no_nan_where_adam_at_1e_1_diverges():
    # A MAF flow on 8x8 digits: Adam(1e-1) ends far above its initial loss (it blows up),
    # the pretrained optimizer must stay finite and go down.
    task = lopt.tasks.build({"family": "maf", "dataset": "digits"})
    adam = lopt.inner.train(task, optax.adam(1e-1), key=jax.random.key(0), num_steps=200)
    ours = lopt.inner.train(task, lopt.pretrained.optimizer(num_steps=200), key=jax.random.key(0), num_steps=200)
    adam_loss, our_loss = np.asarray(adam.train_loss), np.asarray(ours.train_loss)
    assert bool(adam.diverged) or adam_loss[-20:].mean() > 2 * adam_loss[0]
    assert not bool(ours.diverged) and np.all(np.isfinite(our_loss))
    assert our_loss[-20:].mean() < 0.8 * our_loss[0]


def test_chains_with_optax_and_runs_without_num_steps():
    params, loss = _mlp_problem(jnp.float32)
    opt = optax.chain(optax.clip_by_global_norm(1.0), lopt.pretrained.optimizer())
    _, losses = _train(opt, params, loss, 100)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_anchored_shipped_network_converges_where_the_drifting_one_stalls():
    # The shipped network's direction at zero gradient inputs is a few hundredths of an Adam step;
    # unanchored, that drift keeps a deterministic ill-conditioned quadratic from converging.
    import dataclasses

    theta, shipped = lopt.pretrained.load()
    target = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    curvature = jnp.asarray([1.0, 10.0, 100.0, 1000.0])
    loss = lambda x: 0.5 * jnp.sum(curvature * jnp.square(x - target))
    finals = {}
    for anchored in (True, False):
        opt = dataclasses.replace(shipped, anchored_direction=anchored).optimizer(theta, num_steps=3000)

        def step(carry, _, opt=opt):
            x, state = carry
            updates, state = opt.update(jax.grad(loss)(x), state, x)
            return (x + updates, state), None

        x0 = jnp.zeros(4)
        (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=3000)
        finals[anchored] = float(loss(x))
    assert finals[True] < 1e-4 < finals[False] and finals[True] < 0.02 * finals[False], finals


def test_shipped_optimizer_does_not_move_at_a_stationary_point():
    from lopt import analysis

    theta, learned = lopt.pretrained.load()
    task = lopt.tasks.build({"family": "mlp", "dataset": "digits", "hidden_sizes": [16]})
    trace = analysis.record_trace(analysis.as_subject(learned, theta=theta, num_steps=60), task,
                                  key=jax.random.key(0), num_steps=60, num_snapshots=3)
    drift = analysis.rest_drift(trace)
    assert np.all(drift.step_rms[1:] > 0) and np.all(drift.drift == 0.0)


def test_validate_loads_a_theta_file_with_an_execution_option_and_refuses_others():
    from lopt.pretrained import path as weights_path
    from lopt.pretrained.validate import _load

    _theta, plain = _load(str(weights_path("default")))
    _, half = _load(str(weights_path("default")), {"state_dtype": "bfloat16"})
    assert plain.state_dtype == "float32" and half.state_dtype == "bfloat16"
    assert half.config() == plain.config()  # the same architecture: an execution option only
    with pytest.raises(ValueError, match="'hidden_size' is not an execution option"):
        _load(str(weights_path("default")), {"hidden_size": 4})
