"""Learning-rate schedules of nadamw and adam8p at specific steps, computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers import linear_exponential_schedule, warmup_cosine_schedule


def values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_warmup_constant_cosine():
    # T=100, warmup 10 steps, constant until 50, cosine from 2.0 down to 0.1 * 2.0 at 100.
    sched = warmup_cosine_schedule(
        2.0, total_steps=100, warmup_fraction=0.1, constant_fraction=0.5, min_learning_rate_mult=0.1
    )
    lo = 0.2
    want = {
        0: 0.0,  # warmup starts at 0
        5: 1.0,
        9: 1.8,
        10: 2.0,  # warmup over
        30: 2.0,
        50: 2.0,  # decay starts
        75: lo + (2.0 - lo) * 0.5,  # cos(pi/2) = 0
        90: lo + (2.0 - lo) * 0.5 * (1 + np.cos(0.8 * np.pi)),
        100: lo,
        500: lo,  # held after total_steps
    }
    np.testing.assert_allclose(values(sched, want), list(want.values()), rtol=1e-6, atol=1e-7)


def test_warmup_is_capped_by_constant_phase():
    # TaskSet: warmup lasts min(warmup_fraction, constant_fraction) * T = 2 steps here.
    sched = warmup_cosine_schedule(1.0, total_steps=10, warmup_fraction=0.5, constant_fraction=0.2)
    np.testing.assert_allclose(
        values(sched, [0, 1, 2, 6, 10]), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, want",
    [
        ({}, [1.0, 1.0, 1.0]),  # constant_fraction=1: no decay (and no division by 0)
        ({"constant_fraction": 0.0}, [1.0, 0.5, 0.0]),  # cosine from step 0
        ({"warmup_fraction": 1.0, "constant_fraction": 1.0}, [0.0, 0.5, 1.0]),  # warmup only
    ],
)
def test_edges_are_finite(kwargs, want):
    sched = warmup_cosine_schedule(1.0, total_steps=4, **kwargs)
    np.testing.assert_allclose(values(sched, [0, 2, 4]), want, atol=1e-6)


def test_cosine_schedule_vmaps_over_its_arguments():
    steps = jnp.arange(0, 101, 10)

    def curve(wf, cf):
        return jax.vmap(warmup_cosine_schedule(1.0, 100, wf, cf))(steps)

    wfs, cfs = [0.0, 0.1, 0.3], [1.0, 0.5, 0.0]
    batched = jax.jit(jax.vmap(curve))(jnp.array(wfs), jnp.array(cfs))
    for i in range(3):
        sched = warmup_cosine_schedule(1.0, 100, wfs[i], cfs[i])
        np.testing.assert_allclose(batched[i], values(sched, steps.tolist()), atol=1e-6)
    assert bool(jnp.isfinite(batched).all())


def test_linear_exponential():
    sched = linear_exponential_schedule(1.0, linear_decay=0.1, exponential_decay=0.2)
    want = [1.0, 0.7 * np.exp(-0.6), 0.1 * np.exp(-1.8), 0.0, 0.0]
    np.testing.assert_allclose(values(sched, [0, 3, 9, 10, 12]), want, rtol=1e-6, atol=1e-7)
