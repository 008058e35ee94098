"""Estimators against a meta-gradient computed independently of lopt.meta.

The problem: learnable SGD with momentum on a fixed quadratic (noise-free, init at 0, so every
episode is identical). The reference is ``jax.grad`` of the mean normalised loss over a whole
episode, written out by hand in float64 (no truncation, no vmap, no lopt.meta code).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import lopt.learned
import lopt.meta

DIM, HORIZON = 5, 40
CFG = {"family": "quadratic", "dim": DIM, "condition_number": 10.0, "rotate": False, "init_scale": 0.0, "seed": 7}
LOPT = lopt.learned.get("learnable_sgdm", lr=0.1, momentum=0.5)


def exact_initial_loss():
    task = lopt.tasks.build(CFG)
    a, opt = (np.asarray(task.settings[k], np.float64) for k in ("matrix", "optimum"))
    return 0.5 * opt @ a @ opt


def reference_gradient(horizon, steps=None):
    """d/dtheta of the mean normalised loss over steps [0, steps) of a `horizon`-step episode."""
    task = lopt.tasks.build(CFG)
    a_np, opt_np = (np.asarray(task.settings[k], np.float64) for k in ("matrix", "optimum"))
    theta_np = {k: np.float64(v) for k, v in LOPT.init(jax.random.key(0)).items()}
    l0 = exact_initial_loss()
    steps = steps or horizon

    def mean_loss(theta):
        lr, beta = jnp.exp(theta["log_lr"]), jax.nn.sigmoid(theta["logit_momentum"])
        x, m, total = jnp.zeros(DIM, jnp.float64), jnp.zeros(DIM, jnp.float64), 0.0
        for _ in range(steps):
            delta = x - opt
            total = total + 0.5 * delta @ a @ delta / l0
            m = beta * m + a @ delta
            x = x - lr * m
        return total / steps

    with jax.enable_x64(True):
        a, opt = jnp.asarray(a_np), jnp.asarray(opt_np)
        grad = jax.grad(mean_loss)({k: jnp.asarray(v) for k, v in theta_np.items()})
    return np.array([float(grad["log_lr"]), float(grad["logit_momentum"])])


def problem(horizon, unroll_length):
    return lopt.meta.make_problem(LOPT, [CFG], horizon=horizon, unroll_length=unroll_length,
                                  normalizers=[(exact_initial_loss(), 0.0)])


def as_vector(grad):
    return np.array([float(grad["log_lr"]), float(grad["logit_momentum"])])


def run_estimates(estimator, num_calls, burn_in=0, seed=0):
    theta = LOPT.init(jax.random.key(0))
    state = estimator.init(theta, key=jax.random.key(seed))
    step = jax.jit(lambda e, t, s, k: e.estimate(t, s, key=k))
    out = []
    for i in range(burn_in + num_calls):
        grad, state, metrics = step(estimator, theta, state, jax.random.fold_in(jax.random.key(seed + 1), i))
        if i >= burn_in:
            out.append(as_vector(grad))
    return np.array(out)


def test_tbptt_matches_exact_gradient_over_whole_episode():
    """With K = horizon a truncated unroll is the whole episode: TBPTT is the exact gradient."""
    estimates = run_estimates(lopt.meta.TruncatedBackprop(problem(HORIZON, HORIZON), num_tasks=2), 2)
    expected = reference_gradient(HORIZON)
    np.testing.assert_allclose(estimates[0], expected, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(estimates[1], expected, rtol=2e-4, atol=1e-7)


def test_tbptt_first_truncation_matches_exact_partial_gradient():
    estimates = run_estimates(lopt.meta.TruncatedBackprop(problem(HORIZON, 10), num_tasks=1), 1)
    # init_slots cuts the first episode to a random multiple of K; the first unroll is its first 10 steps
    np.testing.assert_allclose(estimates[0], reference_gradient(HORIZON, steps=10), rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("estimator_cls", [lopt.meta.TruncatedES, lopt.meta.PES])
def test_es_and_pes_agree_with_exact_gradient_within_error(estimator_cls):
    estimates = run_estimates(estimator_cls(problem(HORIZON, HORIZON), num_tasks=64, std=0.01), 24)
    mean, sem = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    expected = reference_gradient(HORIZON)
    assert np.all(np.abs(mean - expected) < 4 * sem + 1e-3 * np.abs(expected)), (mean, expected, sem)


def test_full_horizon_es_agrees_with_exact_gradient_within_error():
    estimator = lopt.meta.FullHorizonES(problem(HORIZON, 10), num_tasks=64, std=0.01, meta_loss="mean")
    estimates = run_estimates(estimator, 16)
    mean, sem = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    expected = reference_gradient(HORIZON)
    assert np.all(np.abs(mean - expected) < 4 * sem + 1e-3 * np.abs(expected)), (mean, expected, sem)


def test_pes_unbiased_over_truncations_where_truncated_es_is_biased():
    """Four truncations of 10 steps per 40-step episode: PES estimates the whole-episode gradient."""
    expected = reference_gradient(HORIZON)
    units = HORIZON // 10
    pes = run_estimates(lopt.meta.PES(problem(HORIZON, 10), num_tasks=64, std=0.01), 12 * units, burn_in=units)
    tes = run_estimates(lopt.meta.TruncatedES(problem(HORIZON, 10), num_tasks=64, std=0.01), 12 * units,
                        burn_in=units)
    pes_mean, pes_sem = pes.mean(0), pes.std(0, ddof=1) / np.sqrt(len(pes))
    tes_mean, tes_sem = tes.mean(0), tes.std(0, ddof=1) / np.sqrt(len(tes))
    lr = 0  # the learning-rate component, whose long-range effect truncation ignores
    assert abs(pes_mean[lr] - expected[lr]) < 4 * pes_sem[lr] + 0.02 * abs(expected[lr]), (pes_mean, expected)
    tes_bias = abs(tes_mean[lr] - expected[lr])
    assert tes_bias > 5 * tes_sem[lr] and tes_bias > 0.15 * abs(expected[lr]), (tes_mean, expected, tes_sem)


def test_averaged_estimator_averages():
    prob = problem(HORIZON, HORIZON)
    avg = lopt.meta.Averaged((lopt.meta.TruncatedBackprop(prob, 1), lopt.meta.TruncatedBackprop(prob, 1)), (1.0, 3.0))
    estimates = run_estimates(avg, 1)
    np.testing.assert_allclose(estimates[0], reference_gradient(HORIZON), rtol=2e-4)
    with pytest.raises(ValueError, match="weights"):
        lopt.meta.Averaged((lopt.meta.TruncatedBackprop(prob, 1),), (1.0, 2.0))


@pytest.mark.parametrize("kwargs, match", [({"num_tasks": 0}, "num_tasks=0"), ({"std": 0.0}, "std=0.0")])
def test_bad_estimator_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lopt.meta.PES(problem(HORIZON, 10), **kwargs)
