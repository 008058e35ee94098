"""Probes checked on optimizers whose answers are known by math (a 4-d quadratic keeps them cheap)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import analysis

CANONICAL = "docs/examples/canonical_gpu/theta.safetensors"


@pytest.fixture(scope="module")
def task():
    return lopt.tasks.build({"family": "quadratic", "dim": 4})


def trace_of(optimizer, task, num_steps=60, num_snapshots=3, **kwargs):
    return analysis.record_trace(analysis.as_subject(optimizer, **kwargs), task, key=jax.random.key(0),
                                 num_steps=num_steps, num_snapshots=num_snapshots)


def test_state_layout_finds_per_coordinate_slots():
    params = [{"b": jnp.zeros(2), "w": jnp.zeros((3, 2))}]
    adam = analysis.StateLayout.of(optax.adam(1e-3).init(params), params)
    assert adam.slot_names == ("0/mu", "0/nu") and len(adam.counters) == 1
    lstm = lopt.learned.get("lstm")
    state = lstm.optimizer(lstm.init(jax.random.key(0))).init(params)
    layout = analysis.StateLayout.of(state, params)
    values = layout.get(state, 1, 4) + 1.0
    assert jnp.allclose(layout.get(layout.set(state, 1, 4, values), 1, 4), values)
    # Coordinate 4 of leaf "0/w" is row 2 + 4 of the LSTM's flat [N, hidden] state; others untouched.
    changed = jax.tree.map(lambda a, b: int(jnp.sum(a != b)), layout.set(state, 1, 4, values), state)
    assert sum(jax.tree.leaves(changed)) == layout.width


def test_sgd_momentum_timescale_is_ten_steps(task):
    result = analysis.momentum_timescales(trace_of(optax.sgd(0.05, momentum=0.9), task), impulse_steps=120)
    np.testing.assert_allclose(result.dominant(), [10.0], rtol=1e-4)
    np.testing.assert_allclose(np.abs(result.eigenvalues), 0.9, rtol=1e-5)
    # Impulse response of heavy-ball momentum: -lr * 0.9^k, an averaging window of 1 / (1 - 0.9).
    np.testing.assert_allclose(result.impulse_response[0, :5], -0.05 * 0.9 ** np.arange(5), rtol=1e-4)
    np.testing.assert_allclose(result.effective_timescale, 10.0, rtol=1e-3)


def test_adam_timescales_are_ten_and_one_thousand_steps(task):
    result = analysis.momentum_timescales(trace_of(optax.adam(0.01), task), impulse_steps=10)
    np.testing.assert_allclose(result.dominant(), [10.0, 1000.0], rtol=1e-3)


def test_learned_mlp_state_eigenvalues_are_its_momentum_decays(task):
    theta, lopt_ = lopt.learned.load_theta(CANONICAL)
    result = analysis.momentum_timescales(trace_of(lopt_, task, theta=theta, num_steps=30), impulse_steps=10)
    np.testing.assert_allclose(np.abs(result.eigenvalues), np.broadcast_to(np.sort(lopt_.decays),
                                                                            result.eigenvalues.shape), rtol=1e-5)
    assert np.all(np.isfinite(result.impulse_response))


def test_hard_clip_threshold_is_found_at_one(task):
    result = analysis.clipping(trace_of(optax.chain(optax.clip(1.0), optax.sgd(0.1)), task))
    np.testing.assert_allclose(result.thresholds, [1.0], rtol=1e-3)
    assert result.by_kind() == {"bias": pytest.approx(1.0, rel=1e-3)}
    assert np.isinf(analysis.clipping(trace_of(optax.sgd(0.1), task)).thresholds).all()


def test_adam_update_saturates_at_the_learning_rate(task):
    trace = trace_of(optax.adam(0.01), task)
    curve = analysis.update_function(trace, snapshots=[0], gradients=np.linspace(-100, 100, 41))
    # At step 0 (fresh moments) Adam's update is -lr * g / (|g| + eps): magnitude lr for any sizable g.
    np.testing.assert_allclose(np.abs(curve.updates[0][np.abs(curve.gradients) > 1]), 0.01, rtol=1e-4)
    np.testing.assert_allclose(curve.updates[0], -0.01 * np.sign(curve.gradients), atol=1e-6)
    assert curve.slot_names == ("0/mu", "0/nu") and curve.slot_updates.shape == (1, 2, 101)
    assert np.isfinite(analysis.clipping(trace).thresholds).all()


def test_cosine_schedule_is_recovered_exactly(task):
    schedule = optax.cosine_decay_schedule(0.1, 60)
    result = analysis.learning_rate_schedule(trace_of(optax.sgd(schedule, momentum=0.9), task))
    np.testing.assert_allclose(result.step_size, [schedule(t) for t in result.steps], atol=1e-6)
    np.testing.assert_allclose(result.run_step_size, [schedule(t) for t in result.run_steps], atol=1e-6)
    assert not analysis.learning_rate_schedule(trace_of(optax.sgd(0.1), task)).has_counter


def test_adaptation_follows_adams_second_moment(task):
    sgd = analysis.learning_rate_adaptation(trace_of(optax.sgd(0.1, momentum=0.9), task))
    np.testing.assert_allclose(sgd.gradient_response, 1.0, rtol=1e-4)
    np.testing.assert_allclose(sgd.loss_response, 1.0, rtol=1e-6)
    adam = analysis.learning_rate_adaptation(trace_of(optax.adam(0.01), task, num_steps=200))
    nu = adam.slot_responses[adam.slot_names.index("0/nu")]
    assert adam.exponent(nu, above=1.0) == pytest.approx(-0.5, abs=0.05)  # step size ~ 1 / sqrt(nu)
    np.testing.assert_allclose(adam.loss_response, 1.0)  # Adam ignores the loss


def test_learnable_adam_at_init_probes_like_optax_adam(task):
    learned = trace_of(lopt.learned.get("learnable_adam", lr=0.01), task)
    reference = trace_of(optax.adam(0.01), task)
    np.testing.assert_allclose(learned.train_loss, reference.train_loss, rtol=1e-5)
    a = analysis.update_function(learned, num_points=21)
    b = analysis.update_function(reference, num_points=21)
    np.testing.assert_allclose(a.updates, b.updates, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(a.slot_updates, b.slot_updates, rtol=1e-4, atol=1e-8)


def test_implicit_regularization_sgd_and_adam_keep_x_plus_y():
    result = analysis.implicit_regularization({"sgd": optax.sgd(0.2), "adam": optax.adam(0.05),
                                               "adamw": optax.adamw(0.05, weight_decay=0.5)}, num_steps=400)
    for i in range(2):  # SGD and Adam end at the minimiser closest to the start
        np.testing.assert_allclose(result.finals[i], result.closest_minimizer, atol=2e-3)
    assert result.norm_ratio()["adamw"] < 0.9  # weight decay: smaller-norm solutions
    assert result.final_loss.max() < 1e-3


def test_probes_reject_bad_inputs(task):
    trace = trace_of(optax.adam(0.01), task)
    with pytest.raises(ValueError, match="tensor="):
        analysis.update_function(trace, tensor="nope")
    with pytest.raises(ValueError, match="magnitudes"):
        analysis.clipping(trace, magnitudes=[3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="num_snapshots"):
        analysis.record_trace(trace.subject, task, key=jax.random.key(0), num_steps=5, num_snapshots=6)
    with pytest.raises(TypeError, match="theta"):
        analysis.as_subject(optax.adam(1e-3), theta={"x": 1.0})
    with pytest.raises(TypeError, match="learned optimizer"):
        analysis.meta_gradient_diagnostics(trace.subject, task, key=jax.random.key(0))
    with pytest.raises(ValueError, match="snapshot index"):
        trace.snapshot(7)


def test_as_subject_passes_an_optional_horizon_on():
    """The pretrained optimizer's schedule is placed by num_steps though it runs without one."""
    theta, lopt_ = lopt.pretrained.load()
    assert not lopt_.requires_num_steps()
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.3, 6)}

    def last_update(opt, steps=40):
        state = opt.init(params)
        for _ in range(steps):
            update, state = opt.update(grads, state, params)
        return np.asarray(update["w"])

    subject = analysis.as_subject("pretrained:default", num_steps=50)
    np.testing.assert_array_equal(last_update(subject.optimizer), last_update(lopt_.optimizer(theta, num_steps=50)))
    assert not np.allclose(last_update(subject.optimizer), last_update(lopt_.optimizer(theta)))
    np.testing.assert_array_equal(last_update(subject.with_theta(theta, num_steps=50)),
                                  last_update(lopt_.optimizer(theta, num_steps=50)))


def test_as_subject_reads_theta_files_and_names():
    from_file = analysis.as_subject(CANONICAL)
    theta, lopt_ = lopt.learned.load_theta(CANONICAL)
    assert from_file.label == "canonical_gpu" and from_file.lopt == lopt_
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(from_file.theta), jax.tree.leaves(theta)))
    adam = analysis.as_subject("adam")
    assert not adam.is_learned and adam.label == "adam"
    with pytest.raises(FileNotFoundError):
        analysis.as_subject("no/such/theta.safetensors")
    with pytest.raises(ValueError, match="horizon"):
        analysis.as_subject(lopt.learned.get("mlp", fraction_features=True))
