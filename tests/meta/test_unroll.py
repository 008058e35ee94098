"""Truncated unrolls and truncation schedules: offsets, resets, shared data, objectives."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import lopt.meta

LOPT = lopt.learned.get("learnable_sgdm", lr=0.05)
CFG = {"family": "quadratic", "dim": 6, "noise": 0.5}


def make(horizon=40, k=10, objective="train", cfgs=(CFG,), episode_weighting="uniform"):
    return lopt.meta.make_problem(LOPT, list(cfgs), horizon=horizon, unroll_length=k, objective=objective,
                                  normalizers=[(10.0, 0.0)] * len(cfgs), episode_weighting=episode_weighting)


def test_first_episodes_are_cut_to_random_multiples_of_k():
    problem = make(horizon=100, k=10)
    theta = LOPT.init(jax.random.key(0))
    state = lopt.meta.init_slots(problem, theta, key=jax.random.key(1), num_tasks=64)
    horizons = np.asarray(state.horizon)
    assert np.all(horizons % 10 == 0) and horizons.min() >= 10 and horizons.max() <= 100
    assert len(set(horizons.tolist())) > 5  # they will not all reset together
    assert np.all(np.asarray(state.step) == 0)


def test_reset_finished_resets_exactly_the_finished_slots_with_equal_members():
    problem = make(cfgs=(CFG, {**CFG, "seed": 1}, {**CFG, "seed": 2}))
    theta = LOPT.init(jax.random.key(0))
    state = lopt.meta.init_slots(problem, theta, key=jax.random.key(1), num_tasks=6, num_members=2)
    perturbed = jax.tree.map(lambda x: x + 1.0, state.params)
    step = jnp.array([0, 40, 10, 40, 0, 50])
    state = lopt.meta.SlotState(task_index=state.task_index, step=step, horizon=jnp.full(6, 40),
                                episode_key=state.episode_key, params=perturbed, opt_state=state.opt_state)
    new, reset = lopt.meta.reset_finished(problem, theta, state, key=jax.random.key(2))
    np.testing.assert_array_equal(reset, [False, True, False, True, False, True])
    np.testing.assert_array_equal(np.asarray(new.step), [0, 0, 10, 0, 0, 0])
    x = np.asarray(new.params["x"])
    np.testing.assert_array_equal(x[~np.asarray(reset)], np.asarray(perturbed["x"])[~np.asarray(reset)])
    np.testing.assert_array_equal(x[:, 0], x[:, 1])  # both members start the new episode identically
    assert np.all(np.asarray(new.horizon) % 10 == 0)


def test_members_with_equal_theta_see_the_same_data():
    problem = make()
    theta = LOPT.init(jax.random.key(0))
    state = lopt.meta.init_slots(problem, theta, key=jax.random.key(1), num_tasks=3, num_members=2)
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (3, 2)), theta)
    new, out = jax.jit(lopt.meta.unroll)(problem, thetas, state)
    np.testing.assert_array_equal(np.asarray(new.params["x"])[:, 0], np.asarray(new.params["x"])[:, 1])
    np.testing.assert_array_equal(out.meta_loss[:, 0], out.meta_loss[:, 1])
    assert np.all(np.asarray(new.step) == 10)


def test_meta_loss_is_the_normalised_mean_loss_and_valid_objective_is_noise_free():
    theta = LOPT.init(jax.random.key(0))
    train_problem, valid_problem = make(objective="train"), make(objective="valid")
    state = lopt.meta.init_slots(train_problem, theta, key=jax.random.key(1), num_tasks=2)
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (2, 1)), theta)
    _, train_out = lopt.meta.unroll(train_problem, thetas, state)
    _, valid_out = lopt.meta.unroll(valid_problem, thetas, state)
    np.testing.assert_allclose(train_out.meta_loss[:, 0], train_out.train_loss[:, 0] / 10.0, rtol=1e-5)
    # the quadratic's valid split has no gradient noise: a different (exact) objective
    assert not np.allclose(train_out.meta_loss, valid_out.meta_loss)
    assert np.all(valid_out.meta_loss > 0)


def test_linear_episode_weighting_scales_step_t_by_2_t_plus_1_over_h_plus_1():
    horizon = 4
    uniform, linear = make(horizon=horizon, k=1), make(horizon=horizon, k=1, episode_weighting="linear")
    theta = LOPT.init(jax.random.key(0))
    state = lopt.meta.init_slots(uniform, theta, key=jax.random.key(1), num_tasks=horizon)
    state = dataclasses.replace(state, step=jnp.arange(horizon), horizon=jnp.full(horizon, horizon))
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (horizon, 1)), theta)
    _, plain = lopt.meta.unroll(uniform, thetas, state)
    _, weighted = lopt.meta.unroll(linear, thetas, state)
    expected = 2.0 * (np.arange(horizon) + 1) / (horizon + 1)  # 0.4, 0.8, 1.2, 1.6: mean 1 over the episode
    np.testing.assert_allclose(np.asarray(weighted.meta_loss[:, 0]) / np.asarray(plain.meta_loss[:, 0]), expected,
                               rtol=1e-5)
    np.testing.assert_array_equal(weighted.train_loss, plain.train_loss)  # only the meta-loss is weighted


def test_truncation_schedules():
    keys = jax.random.split(jax.random.key(0), 2000)
    samples = np.asarray(jax.vmap(lopt.meta.LogUniformHorizon(100, 10_000).sample)(keys))
    assert samples.min() >= 100 and samples.max() <= 10_000
    logs = np.log10(samples)
    assert abs(np.mean(logs < 3) - 0.5) < 0.05  # log-uniform: half below the geometric midpoint 1,000
    assert int(lopt.meta.NeverEnding().sample(keys[0])) >= 2**30
    assert lopt.meta.make_schedule("log_uniform", min_horizon=5, max_horizon=50) == lopt.meta.LogUniformHorizon(5, 50)
    with pytest.raises(ValueError, match="truncation kind"):
        lopt.meta.make_schedule("sometimes")
    with pytest.raises(ValueError, match="min_horizon"):
        lopt.meta.LogUniformHorizon(100, 10)
    with pytest.raises(ValueError, match="horizon=0"):
        lopt.meta.ConstantHorizon(0)


def test_make_problem_errors():
    with pytest.raises(ValueError, match="task_configs is empty"):
        lopt.meta.make_problem(LOPT, [], horizon=10)
    with pytest.raises(ValueError, match="one structure"):
        lopt.meta.make_problem(LOPT, [CFG, {**CFG, "dim": 7}], horizon=10)
    with pytest.raises(ValueError, match="objective"):
        make(objective="test")
    with pytest.raises(ValueError, match="episode_weighting='final'"):
        make(episode_weighting="final")
    with pytest.raises(TypeError, match="LearnedOptimizer"):
        lopt.meta.MetaProblem(lopt=object(), tasks=None, initial_loss=None, best_loss=None,
                              truncation=lopt.meta.ConstantHorizon(10), unroll_length=5)
    with pytest.raises(ValueError, match="2 normalizers for 1"):
        lopt.meta.make_problem(LOPT, [CFG], horizon=10, normalizers=[(1, 0), (1, 0)])


def test_unfrozen_optimizer_state_of_a_diverged_member_changes_nothing_else():
    """The ES estimators skip freezing a diverged member's optimizer state (a select over the
    whole state every step): everything the estimators read must be the same as with it."""
    problem = make(horizon=40, k=10)
    theta = LOPT.init(jax.random.key(0))
    state = lopt.meta.init_slots(problem, theta, key=jax.random.key(1), num_tasks=3, num_members=2)
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (3, 2)), theta)
    thetas = {**thetas, "log_lr": thetas["log_lr"].at[0, 1].set(jnp.log(1e20))}  # blows up at once
    runs = [jax.jit(functools.partial(lopt.meta.unroll, freeze_diverged_state=freeze))(problem, thetas, state)
            for freeze in (True, False)]
    (frozen, out_frozen), (free, out_free) = runs
    diverged = np.asarray(out_frozen.diverged)
    assert diverged[0, 1] and diverged.sum() == 1
    for a, b in zip(jax.tree.leaves(out_frozen), jax.tree.leaves(out_free)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(frozen.params["x"]), np.asarray(free.params["x"]))
    np.testing.assert_array_equal(np.asarray(frozen.step), np.asarray(free.step))
    assert int(frozen.step[0]) == int(state.horizon[0])  # the diverged slot is finished: reset before its state is read
    for a, b in zip(jax.tree.leaves(frozen.opt_state), jax.tree.leaves(free.opt_state)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(a[1:], b[1:])
        np.testing.assert_array_equal(a[0, 0], b[0, 0])
    moved = [not np.array_equal(np.asarray(a)[0, 1], np.asarray(b)[0, 1], equal_nan=True)
             for a, b in zip(jax.tree.leaves(frozen.opt_state), jax.tree.leaves(free.opt_state))]
    assert any(moved)  # without freezing, the dead member's state went on
