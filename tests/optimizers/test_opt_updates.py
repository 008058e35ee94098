"""First updates of each baseline against its formula written out in numpy (not optax)."""

import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers import adam, adam8p, momentum, nadamw, rmsprop, sgd

PARAMS = np.array([0.5, -1.5, 0.0, 2.0], np.float32)
GRADS = [
    np.array([0.1, -0.2, 0.3, 0.0], np.float32),
    np.array([-0.4, 0.5, 0.1, 1.0], np.float32),
    np.array([0.2, 0.2, -0.6, -0.5], np.float32),
]


def run(opt, params=PARAMS, grads=GRADS):
    """Applies ``opt`` to the fixed gradient sequence; returns the list of updates."""
    p = jnp.asarray(params)
    state = opt.init(p)
    updates = []
    for g in grads:
        u, state = opt.update(jnp.asarray(g), state, p)
        p = p + u
        updates.append(np.asarray(u))
    return updates


def check(got, want):
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7, err_msg=f"update {t + 1}")


def test_sgd():
    check(run(sgd(0.3)), [-0.3 * g for g in GRADS])


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum(nesterov):
    lr, mu = 0.1, 0.8
    m, want = np.zeros(4), []
    for g in GRADS:
        m = mu * m + g
        want.append(-lr * (g + mu * m) if nesterov else -lr * m)
    check(run(momentum(lr, momentum=mu, nesterov=nesterov)), want)


def test_momentum_hand_values():
    # g = 1, 1: heavy ball m = 1, 1.5; Nesterov g + 0.5 m = 1.5, 1.75.
    g = [np.ones(1, np.float32)] * 2
    np.testing.assert_allclose(run(momentum(1.0, 0.5), np.zeros(1), g), [[-1.0], [-1.5]])
    np.testing.assert_allclose(run(momentum(1.0, 0.5, True), np.zeros(1), g), [[-1.5], [-1.75]])


def test_rmsprop_with_momentum():
    lr, decay, eps, mu = 0.01, 0.9, 1e-6, 0.5
    v, m, want = np.zeros(4), np.zeros(4), []
    for g in GRADS:
        v = decay * v + (1 - decay) * g**2
        m = mu * m + g / np.sqrt(v + eps)
        want.append(-lr * m)
    check(run(rmsprop(lr, decay=decay, eps=eps, momentum=mu)), want)


def test_adam():
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-3
    m, v, want = np.zeros(4), np.zeros(4), []
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        want.append(-lr * m_hat / (np.sqrt(v_hat) + eps))
    check(run(adam(lr, b1=b1, b2=b2, eps=eps)), want)


def test_adam_first_step_is_signed_learning_rate():
    (u,) = run(adam(0.1, eps=0.0), np.zeros(2), [np.array([3.0, -0.01], np.float32)])
    np.testing.assert_allclose(u, [-0.1, 0.1], rtol=1e-5)


def nadamw_reference(lrs, b1, b2, eps, nesterov, adamw_weight_decay, l2_weight_decay):
    """NAdamW (TaskSet) in numpy; ``lrs[t]`` is the scheduled learning rate of update t+1."""
    p, m, v, want = PARAMS.astype(np.float64), np.zeros(4), np.zeros(4), []
    for t, (g, lr) in enumerate(zip(GRADS, lrs), start=1):
        g = g + l2_weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        n = b1 * m + (1 - b1) * g if nesterov else m
        u = -lr_t * (n / (np.sqrt(v) + eps) + adamw_weight_decay * p)
        p = p + u
        want.append(u)
    return want


@pytest.mark.parametrize("nesterov", [True, False])
def test_nadamw_constant_learning_rate(nesterov):
    hp = {
        "b1": 0.8,
        "b2": 0.95,
        "eps": 1e-3,
        "nesterov": nesterov,
        "adamw_weight_decay": 0.1,
        "l2_weight_decay": 0.2,
    }
    want = nadamw_reference([0.01] * 3, **hp)
    check(run(nadamw(0.01, **hp)), want)


def test_nadamw_nesterov_first_step_by_hand():
    # t=1, g=1, b1=0.5, b2=0.75: m=0.5, v=0.25, lr_t = lr*sqrt(0.25)/0.5 = lr,
    # n = 0.5*0.5 + 0.5*1 = 0.75, update = -lr * 0.75 / 0.5 = -1.5 lr.
    opt = nadamw(0.1, b1=0.5, b2=0.75, eps=0.0, nesterov=True)
    (u,) = run(opt, np.zeros(1), [np.ones(1, np.float32)])
    np.testing.assert_allclose(u, [-0.15], rtol=1e-6)


def test_nadamw_with_schedule():
    # total_steps=4, warmup 0.5, constant 0.5: W = C = 2, so lr(0)=0, lr(1)=lr/2, lr(2)=lr.
    lr = 0.02
    hp = {
        "b1": 0.9,
        "b2": 0.99,
        "eps": 1e-8,
        "nesterov": True,
        "adamw_weight_decay": 0.01,
        "l2_weight_decay": 0.0,
    }
    want = nadamw_reference([0.0, lr / 2, lr], **hp)
    opt = nadamw(lr, warmup_fraction=0.5, constant_fraction=0.5, total_steps=4, **hp)
    check(run(opt), want)


def test_adam8p_l1_l2_and_schedule():
    lr, b1, b2, eps, l1, l2, lin, ex = 0.05, 0.9, 0.99, 1e-4, 0.3, 0.2, 0.1, 0.5
    p, m, v, want = PARAMS.astype(np.float64), np.zeros(4), np.zeros(4), []
    for t, g in enumerate(GRADS, start=1):
        g = g + l1 * np.sign(p) + 2 * l2 * p  # d/dp of l1 |p| + l2 p^2; sign(0) = 0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        rate = lr * max(1 - lin * (t - 1), 0) * np.exp(-ex * (t - 1))
        u = -rate * m_hat / (np.sqrt(v_hat + 1e-10) + eps)
        p = p + u
        want.append(u)
    opt = adam8p(lr, b1=b1, b2=b2, eps=eps, l1=l1, l2=l2, linear_decay=lin, exponential_decay=ex)
    check(run(opt), want)


def test_adam8p_regularisers_by_hand():
    # Zero gradient: the update follows l1 * sign(p) + 2 * l2 * p alone; the first Adam step is
    # -lr * sign(that). At p = -1, l1 = 1, l2 = 0.25: -1 - 0.5 < 0, so the step is +lr.
    opt = adam8p(0.1, eps=0.0, l1=1.0, l2=0.25)
    (u,) = run(opt, np.array([-1.0]), [np.zeros(1, np.float32)])
    np.testing.assert_allclose(u, [0.1], rtol=1e-4)


def test_adam8p_defaults_match_adam():
    np.testing.assert_allclose(run(adam8p(0.01)), run(adam(0.01)), rtol=1e-4, atol=1e-7)
