"""The `nominal` architecture: Adam at its initial theta, the schedule, the learned terms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.learned import NominalLOpt


def _problem():
    key = jax.random.key(3)
    ks = jax.random.split(key, 4)
    params = {"kernel": jax.random.normal(ks[0], (3, 3, 2, 4)), "w": jax.random.normal(ks[1], (5, 3)),
              "b": jnp.zeros(3), "s": jnp.asarray(0.5)}
    grads = [jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) + 0.1 * i, params) for i in range(100)]
    return params, grads


def _run(opt, params, grads):
    state = opt.init(params)

    def step(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *grads)
    (params, _), _ = jax.lax.scan(step, (params, state), stacked)
    return params


def test_initial_theta_is_adam_over_100_steps():
    lopt_ = NominalLOpt()
    theta = lopt_.init(jax.random.key(0))
    params, grads = _problem()
    ours = _run(lopt_.optimizer(theta, num_steps=100), params, grads)
    ref = _run(optax.adam(1e-3), params, grads)
    for name in params:
        np.testing.assert_allclose(ours[name], ref[name], rtol=2e-5, atol=1e-7)


def test_schedule_is_piecewise_linear_in_log_lr():
    lopt_ = NominalLOpt(schedule_knots=3)
    theta = lopt_.init(jax.random.key(0))
    theta["schedule"] = jnp.asarray([0.0, jnp.log(2.0), jnp.log(4.0)])
    lrs = [float(lopt_.learning_rate(theta, f)) for f in (0.0, 0.5, 0.75, 1.0, 2.0)]
    np.testing.assert_allclose(lrs, [1e-3, 2e-3, 1e-3 * np.exp(0.5 * (np.log(2) + np.log(4))), 4e-3, 4e-3],
                               rtol=1e-5)


def test_learned_terms_change_the_update():
    lopt_ = NominalLOpt()
    theta = lopt_.init(jax.random.key(0))
    params, grads = _problem()
    base = _run(lopt_.optimizer(theta, num_steps=100), params, grads[:5])
    theta2 = dict(theta, network=dict(theta["network"], w2=jnp.full((8, 2), 0.3)),
                  log_tensor_mult=jnp.asarray([0.0, 1.0]))
    moved = _run(lopt_.optimizer(theta2, num_steps=100), params, grads[:5])
    assert not np.allclose(base["w"], moved["w"])
    # vectors only see the network change, matrices also the e-fold multiplier
    assert np.all(np.isfinite(moved["kernel"]))


def test_without_num_steps_uses_the_frozen_fraction():
    lopt_ = NominalLOpt(unknown_horizon_fraction=1.0, schedule_knots=2)
    theta = dict(lopt_.init(jax.random.key(0)), schedule=jnp.asarray([0.0, jnp.log(0.5)]))
    params = {"w": jnp.ones(2)}
    opt = lopt_.optimizer(theta)
    u, _ = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
    np.testing.assert_allclose(u["w"], -5e-4, rtol=1e-5)


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("b1", 1.0), ("extra_decays", (0.9,)),
                                         ("schedule_knots", 1), ("unknown_horizon_fraction", 1.5)])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        NominalLOpt(**{field: value})


def _trained_looking_theta(lopt_):
    theta = lopt_.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(5), 3)
    network = dict(theta["network"], w2=0.3 * jax.random.normal(keys[0], (8, 2)),
                   w1=theta["network"]["w1"] + 0.2 * jax.random.normal(keys[1], (8, 8)))
    return dict(theta, network=network, log_tensor_mult=jnp.asarray([0.3, -0.2]), mup_exponent=jnp.asarray(0.5),
                schedule=0.1 * jax.random.normal(keys[2], (lopt_.schedule_knots,)))


def test_concatenated_tensors_give_the_per_tensor_update_with_a_smaller_program():
    per_tensor, joined = NominalLOpt(), NominalLOpt(concatenate_tensors=True)
    theta = _trained_looking_theta(per_tensor)
    params, grads = _problem()
    a = _run(per_tensor.optimizer(theta, num_steps=100), params, grads[:20])
    b = _run(joined.optimizer(theta, num_steps=100), params, grads[:20])
    for name in params:
        np.testing.assert_allclose(b[name], a[name], rtol=2e-6, atol=1e-7)
    assert not np.allclose(a["w"], _run(per_tensor.optimizer(per_tensor.init(jax.random.key(0)), num_steps=100),
                                        params, grads[:20])["w"])  # the learned terms are active

    def ops(lopt_):
        opt = lopt_.optimizer(theta, num_steps=100)
        text = jax.jit(opt.update).lower(grads[0], opt.init(params), params).as_text()
        return sum(1 for line in text.splitlines() if " = stablehlo." in line)

    assert ops(joined) < 0.6 * ops(per_tensor)  # one copy of the network instead of four


def test_concatenate_tensors_must_be_a_bool():
    with pytest.raises(TypeError, match="concatenate_tensors=1"):
        NominalLOpt(concatenate_tensors=1)


def test_concatenate_tensors_is_not_part_of_the_config_a_theta_file_records(tmp_path):
    from lopt.learned.serialization import load_theta, save_theta
    from lopt.meta.warm_start import load_warm_start

    joined = NominalLOpt(concatenate_tensors=True)
    assert joined.config() == NominalLOpt().config() and "concatenate_tensors" not in joined.config()
    theta = _trained_looking_theta(joined)
    save_theta(tmp_path / "t.safetensors", joined, theta)
    loaded, lopt_ = load_theta(tmp_path / "t.safetensors")
    assert lopt_ == NominalLOpt()  # files load as the per-tensor (deployment) layout
    loaded, _, _ = load_warm_start(tmp_path / "t.safetensors", joined)  # and warm-start either layout
    np.testing.assert_array_equal(loaded["schedule"], theta["schedule"])


def test_anchored_direction_must_be_a_bool():
    with pytest.raises(TypeError, match="anchored_direction=1"):
        NominalLOpt(anchored_direction=1)


def _biased_theta(lopt_):
    """A theta whose direction output has a constant part: the drift anchoring removes."""
    theta = _trained_looking_theta(lopt_)
    return dict(theta, network=dict(theta["network"], b2=jnp.asarray([0.2, 0.1])))


def test_anchored_update_is_zero_where_the_gradient_history_is():
    params = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.3, -0.7])}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for anchored, expect_zero in ((True, True), (False, False)):
        lopt_ = NominalLOpt(anchored_direction=anchored)
        opt = lopt_.optimizer(_biased_theta(lopt_), num_steps=100)
        updates, _ = opt.update(zeros, opt.init(params), params)
        for name in params:
            assert bool(jnp.all(updates[name] == 0.0)) == expect_zero, (anchored, name)


def test_anchoring_removes_exactly_the_gradient_free_part_of_the_direction():
    # With the first layer blind to the gradient inputs, the direction depends on the parameter
    # alone, so anchoring cancels it: the update is the one of a network whose direction is zero.
    anchored, plain = NominalLOpt(anchored_direction=True), NominalLOpt()
    theta = _biased_theta(plain)
    w0 = theta["network"]["w0"].at[:5].set(0.0)
    theta = dict(theta, network=dict(theta["network"], w0=w0))
    no_direction = dict(theta, network=dict(theta["network"], w2=theta["network"]["w2"].at[:, 0].set(0.0),
                                            b2=theta["network"]["b2"].at[0].set(0.0)))
    params, grads = _problem()
    got = _run(anchored.optimizer(theta, num_steps=100), params, grads[:10])
    want = _run(plain.optimizer(no_direction, num_steps=100), params, grads[:10])
    drifting = _run(plain.optimizer(theta, num_steps=100), params, grads[:10])
    for name in params:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    assert not np.allclose(drifting["w"], want["w"], atol=1e-5)


def test_anchoring_costs_flops_and_is_recorded_in_the_config():
    plain, anchored = NominalLOpt(), NominalLOpt(anchored_direction=True)
    assert plain.flops_per_param() < anchored.flops_per_param() < 1.6 * plain.flops_per_param()
    assert anchored.config()["anchored_direction"] is True
    assert plain.config()["anchored_direction"] is False
