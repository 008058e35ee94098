"""Learned optimizers skip non-finite steps: zero updates, state unchanged, as if the step never came.

Every registered architecture, one jitted sequence each: a finite step, poisoned steps (a NaN in
one gradient entry, an inf entry, a NaN loss), a finite step. A NaN entry always skips the step
(zero updates, the state bit for bit as before); an inf entry or a NaN loss either skips it or
is contained by the architecture itself (gradient clipping turns -inf into the clip bound), and
nothing non-finite reaches params or state. A blown-up theta (an infinite step size) is skipped.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.linspace(0.5, 1.0, 4)}


def grads(scale):
    return jax.tree.map(lambda p: scale * (p + 0.1), PARAMS)


def poisoned(where, value):
    g = grads(0.7)
    return {**g, "w": g["w"].at[where].set(value)}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def make(name):
    lopt_ = lopt.learned.get(name)
    theta = lopt_.init(jax.random.key(0))
    return lopt_, theta


def steps(lopt_, theta, sequence):
    """Applies ``(grads, loss)`` steps in turn; returns the params, every state (the initial one first) and update."""
    opt = lopt_.optimizer(theta, num_steps=100 if lopt_.requires_num_steps() else None)

    @jax.jit
    def run(grads, losses):  # one scanned step: one small program
        def step(carry, inputs):
            params, state = carry
            g, loss = inputs
            u, new_state = opt.update(g, state, params, loss=loss, valid_loss=loss + 0.1)
            return (jax.tree.map(lambda p, d: p + d, params, u), new_state), (u, new_state)

        init = opt.init(PARAMS)
        (params, _), (updates, states) = jax.lax.scan(step, (PARAMS, init), (grads, losses))
        states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), init, states)
        return params, states, updates

    grads = jax.tree.map(lambda *xs: jnp.stack(xs), *[g for g, _ in sequence])
    params, states, updates = run(grads, jnp.stack([loss for _, loss in sequence]))
    at = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
    return params, [at(states, i) for i in range(len(sequence) + 1)], [at(updates, i) for i in range(len(sequence))]


def skipped(updates, before, after):
    """Whether a step returned zero updates and left the state exactly as it was."""
    return (all((u == 0).all() for u in leaves(updates))
            and all(np.array_equal(a, b) for a, b in zip(leaves(after), leaves(before))))


@pytest.mark.parametrize("name", lopt.learned.names())
def test_poisoned_steps_are_skipped_or_contained(name):
    lopt_, theta = make(name)
    sequence = [(grads(1.0), jnp.float32(2.0)),
                (poisoned((1, 2), jnp.nan), jnp.float32(1.8)),  # one NaN entry in one gradient
                (poisoned((0, 0), -jnp.inf), jnp.float32(1.8)),  # an infinite entry
                (grads(0.7), jnp.float32(jnp.nan)),  # a NaN loss
                (grads(0.5), jnp.float32(1.5))]
    params, states, updates = steps(lopt_, theta, sequence)
    assert not skipped(updates[0], states[0], states[1])  # a finite step moves
    assert skipped(updates[1], states[1], states[2])  # a NaN gradient entry always skips the step
    for step in (2, 3):  # an architecture may contain these itself (gradient clipping, a loss it ignores)
        finite = all(np.isfinite(x).all() for x in leaves(updates[step]) + leaves(states[step + 1]))
        assert skipped(updates[step], states[step], states[step + 1]) or finite
    if lopt_.needs_loss:
        assert skipped(updates[3], states[3], states[4])  # a NaN loss skips every architecture that reads it
    assert not skipped(updates[4], states[4], states[5])  # and training goes on
    assert all(np.isfinite(x).all() for x in leaves(params) + leaves(states[-1]))


def test_a_blown_up_output_is_skipped():
    lopt_ = lopt.learned.get("learnable_sgdm")
    theta = {**lopt_.init(jax.random.key(0)), "log_lr": jnp.float32(200.0)}  # exp(200) = inf in float32
    params, states, updates = steps(lopt_, theta, [(grads(1.0), jnp.float32(1.0))])
    assert skipped(updates[0], states[0], states[1])
    for a, b in zip(leaves(params), leaves(PARAMS)):
        np.testing.assert_array_equal(a, b)


def test_finite_steps_are_unchanged_by_the_guard():
    lopt_, theta = make("mlp")
    opt = lopt_.optimizer(theta, num_steps=100)
    state = opt.init(PARAMS)
    guarded, _ = opt.update(grads(1.0), state, PARAMS, loss=jnp.float32(1.0))
    impl = lopt_._build(theta, jnp.float32(100))
    raw, _ = impl.update(grads(1.0), state, PARAMS, jnp.float32(1.0), None)
    for a, b in zip(leaves(guarded), leaves(raw)):
        np.testing.assert_array_equal(a, b.astype(a.dtype))
