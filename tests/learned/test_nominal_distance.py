"""``NominalLOpt(step_size="distance")``: Prodigy's distance estimate as the base step size."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.learned import NominalLOpt, distance

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_distance_update_matches_hand_computed_two_steps():
    params0 = {"a": jnp.array([1.0, -1.0]), "b": jnp.array(2.0)}
    state = distance.init(params0, initial=0.1)
    g1 = {"a": jnp.array([0.5, -1.0]), "b": jnp.array(1.0)}
    state = distance.update(state, g1, params0, weight=2.0, decay=0.5)  # x = x0: <g, x0 - x> = 0
    assert float(state.numerator) == 0.0 and float(state.distance) == pytest.approx(0.1)
    x = {"a": jnp.array([0.0, 0.0]), "b": jnp.array(1.0)}                # x0 - x = (1, -1, 1)
    g2 = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.0)}
    state = distance.update(state, g2, x, weight=1.0, decay=0.5)
    numerator = 0.5 * 0.0 + 1.0 * (1.0 * 1 + (-2.0) * (-1) + 0.0 * 1)   # 3
    grad_sum = 0.5 * 2.0 * np.array([0.5, -1.0, 1.0]) + np.array([1.0, -2.0, 0.0])  # (1.5, -3, 1)
    assert float(state.numerator) == pytest.approx(numerator)
    np.testing.assert_allclose(state.grad_sum["a"], grad_sum[:2])
    assert float(state.distance) == pytest.approx(numerator / np.abs(grad_sum).sum())  # 3 / 5.5


def test_distance_never_decreases_and_ignores_a_zero_gradient():
    params = {"w": jnp.ones(3)}
    state = distance.init(params, initial=0.3)
    state = distance.update(state, {"w": jnp.zeros(3)}, params, weight=1.0, decay=0.9)
    assert float(state.distance) == pytest.approx(0.3)
    state = distance.update(state, {"w": jnp.ones(3)}, {"w": jnp.full(3, 2.0)}, weight=1.0, decay=0.9)
    assert float(state.distance) == pytest.approx(0.3)  # <g, x0 - x> = -3: a negative estimate is ignored
    state = distance.update(state, {"w": -jnp.ones(3)}, {"w": jnp.full(3, 3.0)}, weight=1.0, decay=0.5)
    # numerator 0.5 * (-3) + 6 = 4.5 over |0.5 * 1 - 1| * 3 = 1.5
    assert float(state.distance) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="initial=0"):
        distance.init(params, initial=0)


def _reference_trajectory(x0, grad_fn, steps, lopt_):
    """The initial theta's update written out in NumPy: d * clip(Adam direction), d from Prodigy's rule."""
    x, m, v = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    d, numerator, grad_sum = lopt_.initial_distance, 0.0, np.zeros_like(x0)
    for t in range(1, steps + 1):
        g = grad_fn(x)
        m = lopt_.b1 * m + (1 - lopt_.b1) * g
        v = lopt_.b2 * v + (1 - lopt_.b2) * g * g
        direction = (m / (1 - lopt_.b1 ** t)) / (np.sqrt(v / (1 - lopt_.b2 ** t)) + lopt_.eps)
        step_d, weight = d, d * d * lopt_.lr
        numerator = lopt_.distance_decay * numerator + weight * np.dot(g, x0 - x)
        grad_sum = lopt_.distance_decay * grad_sum + weight * g
        d = max(d, numerator / np.abs(grad_sum).sum())
        x = x - step_d * lopt_.lr * np.clip(direction, -lopt_.update_clip, lopt_.update_clip)
    return x, d


def test_initial_theta_follows_the_reference_rule():
    assert NominalLOpt(step_size="distance").lr == 1.0 and NominalLOpt().lr == 1e-3
    # d starts at 1e-3, not Prodigy's 1e-6: first moves of 1e-6 are below float32's resolution of
    # x ~ 1, so x0 - x (and with it d) would differ between float32 and this float64 reference
    lopt_ = NominalLOpt(step_size="distance", initial_distance=1e-3)
    scales = np.logspace(0, 2, 6)
    grad_fn = lambda x: scales * (x - 3.0)
    x0 = np.linspace(-1.0, 1.0, 6)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=60)
    params = {"x": jnp.asarray(x0, jnp.float32)}
    state = opt.init(params)
    for _ in range(60):
        updates, state = opt.update({"x": jnp.asarray(grad_fn(np.asarray(params["x"])), jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    x_ref, d_ref = _reference_trajectory(x0.astype(np.float64), grad_fn, 60, lopt_)
    assert d_ref > 100 * lopt_.initial_distance  # the estimate grew, so the comparison means something
    assert float(state.distance.distance) == pytest.approx(d_ref, rel=1e-3)
    np.testing.assert_allclose(params["x"], x_ref, rtol=1e-3, atol=1e-5)


def _final_loss(lopt_, scale, steps=300):
    """Trains a reparameterised quadratic (params stored as x / scale) and returns the final loss."""
    curvature = jnp.logspace(0, 1.5, 8)
    loss = lambda p: 0.5 * jnp.sum(curvature * jnp.square(p["x"] * scale - 1.0))
    opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=steps)
    params = {"x": jnp.zeros(8) + 0.1 / scale}

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, loss=value)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return float(loss(params))


def test_distance_step_solves_every_parameter_scale_and_adam_does_not():
    # a parameter scale of 0.01..100 moves Adam 1e-3's effective step by 1e4; the distance
    # estimate follows the scale (float32 keeps it from being exactly invariant)
    initial = 0.5 * float(jnp.sum(jnp.logspace(0, 1.5, 8))) * 0.9 ** 2  # x * scale = 0.1, optimum 1
    distance_losses = [_final_loss(NominalLOpt(step_size="distance"), s) for s in (0.01, 1.0, 100.0)]
    assert max(distance_losses) < 1e-6 * initial
    adam_losses = [_final_loss(NominalLOpt(), s) for s in (0.01, 1.0, 100.0)]
    assert max(adam_losses) > 0.3 * initial and min(adam_losses) < 1e-6 * initial


def _trajectory(lopt_, scale, steps=60):
    """Params of a quadratic stored as ``x / scale`` (started at ``x0 / scale``), divided back."""
    curvature = jnp.logspace(0, 1.5, 8)
    loss = lambda p: 0.5 * jnp.sum(curvature * jnp.square(p["x"] * scale - 1.0))
    opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=steps)
    params = {"x": jnp.linspace(-0.5, 0.5, 8) / scale}
    state = opt.init(params)
    path = []
    for _ in range(steps):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, loss=value)
        params = optax.apply_updates(params, updates)
        path.append(np.asarray(params["x"]) * scale)
    return np.stack(path)


def test_a_relative_start_makes_the_trajectory_follow_the_parameter_scale():
    # x -> x / c leaves Adam's direction and the network's inputs alone and, with a start in
    # proportion to rms(x0), scales d by 1 / c: the rescaled trajectories coincide
    relative = NominalLOpt(step_size="distance", relative_initial_distance=1e-2)
    reference = _trajectory(relative, 1.0)
    assert np.abs(reference[-1] - reference[0]).max() > 0.1  # it moved
    for scale in (0.01, 100.0):
        np.testing.assert_allclose(_trajectory(relative, scale), reference, rtol=2e-3, atol=2e-4)
    # an absolute start (Prodigy's) is the same 1e-4 at every scale: the paths differ
    absolute = NominalLOpt(step_size="distance", initial_distance=1e-4)
    assert np.abs(_trajectory(absolute, 0.01) - _trajectory(absolute, 100.0)).max() > 1e-2


def test_relative_start_is_the_larger_of_the_two():
    params = {"w": jnp.full((2, 3), 2.0), "b": jnp.zeros(2)}  # rms over 8 entries: sqrt(24 / 8)
    state = distance.init(params, initial=1e-6, relative=1e-3)
    assert float(state.distance) == pytest.approx(1e-3 * np.sqrt(3.0), rel=1e-6)
    assert float(distance.init({"w": jnp.zeros(4)}, initial=1e-6, relative=1e-3).distance) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="relative=-1"):
        distance.init(params, initial=1e-6, relative=-1.0)
    with pytest.raises(ValueError, match="relative_initial_distance=-0.5"):
        NominalLOpt(step_size="distance", relative_initial_distance=-0.5)


def test_relative_start_is_at_least_the_coarsest_dtype_resolution():
    """bfloat16 parameters start at 2**-7 of their RMS (a 1e-5 step would not move them); float32 as asked."""
    full = {"w": jnp.full((2, 3), 2.0), "b": jnp.zeros(2)}  # rms sqrt(3)
    assert distance.dtype_resolution(full) == pytest.approx(2.0 ** -23)
    assert float(distance.init(full, initial=1e-6, relative=1e-5).distance) == pytest.approx(1e-5 * np.sqrt(3.0), rel=1e-6)
    mixed = {"w": full["w"].astype(jnp.bfloat16), "b": full["b"]}
    assert distance.dtype_resolution(mixed) == 2.0 ** -7
    assert float(distance.init(mixed, initial=1e-6, relative=1e-5).distance) == pytest.approx(2.0 ** -7 * np.sqrt(3.0),
                                                                                             rel=1e-3)
    assert float(distance.init(mixed, initial=1e-6, relative=0.0).distance) == pytest.approx(1e-6)  # relative off: as set
    assert distance.dtype_resolution({"steps": jnp.zeros(3, jnp.int32)}) == 0.0


def test_bad_step_size_and_state_bytes():
    with pytest.raises(ValueError, match="step_size='sgd'"):
        NominalLOpt(step_size="sgd")
    with pytest.raises(ValueError, match="initial_distance"):
        NominalLOpt(step_size="distance", initial_distance=0.0)
    assert NominalLOpt(step_size="distance").state_bytes_per_param() == 24
    assert NominalLOpt().state_bytes_per_param() == 16


def test_theta_file_round_trip_keeps_the_step_size(tmp_path):
    lopt_ = NominalLOpt(step_size="distance")
    path = tmp_path / "theta.safetensors"
    lopt.learned.save_theta(path, lopt_, lopt_.init(jax.random.key(1)))
    _, loaded = lopt.learned.load_theta(path)
    assert loaded.step_size == "distance" and loaded.lr == 1.0
    with pytest.raises(ValueError, match="step_size"):
        lopt.learned.load_theta(path, NominalLOpt(lr=1.0))


def test_files_written_before_step_size_existed_load_as_adam():
    # a campaign snapshot and a campaign warm start were written before the field existed
    assert lopt.learned.stored_config("nominal", {"lr": 1e-3})["step_size"] == "adam"
    _, old = lopt.learned.load_theta(ROOT / "campaign/thetas/theta-002059.safetensors")
    assert (old.step_size, old.lr) == ("adam", 1e-3)
    from lopt.meta.warm_start import load_warm_start

    theta, _, meta = load_warm_start(ROOT / "campaign/rewound/warm_start-001806.safetensors", NominalLOpt())
    assert "step_size" not in meta["config"]
    NominalLOpt().check_theta(theta)
    with pytest.raises(ValueError, match="config"):
        load_warm_start(ROOT / "campaign/rewound/warm_start-001806.safetensors", NominalLOpt(step_size="distance"))


@pytest.mark.parametrize("step_size", ["adam", "distance"])
def test_derivatives_through_the_step_are_finite_at_zero_initialised_biases(step_size):
    # what the meta-gradient and Jacobian probes differentiate: the step as a function of params
    lopt_ = NominalLOpt(step_size=step_size)
    opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=10)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
    state = opt.init(params)

    def step(p):
        grads = jax.tree.map(lambda x: 0.1 * x + 0.01, p)
        updates, _ = opt.update(grads, state, p, loss=jnp.asarray(1.0))
        return optax.apply_updates(p, updates)

    tangent = jax.tree.map(jnp.ones_like, params)
    _, out = jax.jvp(step, (params,), (tangent,))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(out))
    jac = jax.jacrev(lambda p: step(p)["b"])(params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(jac))
