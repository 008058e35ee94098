"""Shared problems and helpers for the learned-optimizer tests (the ``lh`` fixture)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt.learned

NUM_STEPS = 100


def make(name: str) -> lopt.learned.LearnedOptimizer:
    """The architecture at its default config."""
    return lopt.learned.get(name)


def _normal(seed: int, shape) -> np.ndarray:
    # NumPy, not jax.random: eager jax ops compile one kernel per shape, which adds up.
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def quadratic_params() -> dict:
    """A two-tensor problem: a matrix and a vector."""
    return {"w": jnp.asarray(_normal(0, (6, 5))), "b": jnp.asarray(_normal(1, (5,)))}


def mixed_params() -> dict:
    """Every kind of leaf: scalar, 4-D conv kernel, nesting, bfloat16 matrix, vector."""
    return {
        "scalar": jnp.asarray(-1.0),
        "conv": jnp.asarray(_normal(2, (3, 3, 2, 4))),
        "nested": [(jnp.asarray(_normal(3, (5, 2)), jnp.bfloat16), jnp.zeros(3))],
    }


def perturbed(theta, seed: int, scale: float = 0.01):
    """theta plus Gaussian noise (NumPy; no compilation)."""
    leaves, treedef = jax.tree.flatten(theta)
    rng = np.random.default_rng(seed)
    return treedef.unflatten(
        [jnp.asarray(np.asarray(x) + scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    )


def quadratic_loss(params) -> jax.Array:
    """Ill-conditioned separable quadratic with its minimum at 0.5 everywhere."""
    total = 0.0
    for i, leaf in enumerate(jax.tree.leaves(params)):
        leaf = leaf.astype(jnp.float32)
        c = np.linspace(0.5, 2.0 + i, leaf.size, dtype=np.float32).reshape(leaf.shape)
        total = total + 0.5 * jnp.sum(c * jnp.square(leaf - 0.5))
    return total


def step(opt, params, state, *, valid: bool = False):
    """One training step with ``loss=`` (and ``valid_loss=`` if asked)."""
    loss, grads = jax.value_and_grad(quadratic_loss)(params)
    extra = {"loss": loss}
    if valid:
        extra["valid_loss"] = 1.1 * loss
    updates, state = opt.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, loss


def unroll(lopt_, theta, params, num_steps: int, *, horizon: int = NUM_STEPS):
    """Trains ``params`` for ``num_steps`` with ``lax.scan``; returns (params, losses)."""
    opt = lopt_.optimizer(theta, num_steps=horizon)
    state = opt.init(params)

    def body(carry, _):
        p, s = carry
        p, s, loss = step(opt, p, s)
        return (p, s), loss

    (params, _), losses = jax.lax.scan(body, (params, state), None, length=num_steps)
    return params, losses


def all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


HELPERS = types.SimpleNamespace(
    NUM_STEPS=NUM_STEPS,
    make=make,
    quadratic_params=quadratic_params,
    mixed_params=mixed_params,
    quadratic_loss=quadratic_loss,
    step=step,
    unroll=unroll,
    all_finite=all_finite,
    perturbed=perturbed,
)


@pytest.fixture(scope="session")
def lh():
    """Helpers: problems (quadratic_params, mixed_params, quadratic_loss) and unrolls."""
    return HELPERS
