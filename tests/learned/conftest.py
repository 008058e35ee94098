"""Shared problems and helpers for the learned-optimizer tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import lopt.learned

NUM_STEPS = 100


def make(name: str) -> lopt.learned.LearnedOptimizer:
    """The architecture at its default config."""
    return lopt.learned.get(name)


def quadratic_params() -> dict:
    """A multi-tensor problem: matrix, vector, scalar and a 4-D conv kernel."""
    k = jax.random.split(jax.random.key(42), 4)
    return {
        "dense": {
            "w": jax.random.normal(k[0], (6, 5)),
            "b": jax.random.normal(k[1], (5,)),
        },
        "scale": jnp.asarray(1.5),
        "conv": jax.random.normal(k[2], (3, 3, 2, 4)),
    }


def quadratic_loss(params) -> jax.Array:
    """Ill-conditioned separable quadratic with its minimum at 0.5 everywhere."""
    total = 0.0
    for i, leaf in enumerate(jax.tree.leaves(params)):
        leaf = leaf.astype(jnp.float32)
        c = jnp.linspace(0.5, 2.0 + i, leaf.size).reshape(leaf.shape)
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
