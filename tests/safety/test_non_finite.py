"""Learned optimizers contain non-finite values: NaN/inf update entries are zeroed and non-finite state
entries keep their old value, so nothing non-finite reaches params or state (lopt.learned.mask_non_finite).

Every registered architecture, one jitted (scanned) sequence each: a finite step, poisoned steps
(a NaN in one gradient entry, an inf entry, a NaN loss), a finite step. Per-entry rules
(learnable Adam/SGD) keep the damage to its entry; a NaN loss reaches every update entry of an
architecture that reads it, so no parameter moves that step.
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


def float_leaves(tree):
    return [x for x in leaves(tree) if np.issubdtype(x.dtype, np.floating)]


def held(updates, before, after):
    """Whether a step returned zero updates and left every float state entry as it was."""
    return (all((u == 0).all() for u in leaves(updates))
            and all(np.array_equal(a, b) for a, b in zip(float_leaves(after), float_leaves(before))))


def all_finite(*trees):
    return all(np.isfinite(x).all() for tree in trees for x in float_leaves(tree))


SEQUENCE = [(grads(1.0), jnp.float32(2.0)),
            (poisoned((1, 2), jnp.nan), jnp.float32(1.8)),  # one NaN entry in one gradient
            (poisoned((0, 0), -jnp.inf), jnp.float32(1.8)),  # an infinite entry
            (grads(0.7), jnp.float32(jnp.nan)),  # a NaN loss
            (grads(0.5), jnp.float32(1.5))]


@pytest.mark.parametrize("name", lopt.learned.names())
def test_non_finite_inputs_never_reach_params_or_state(name):
    lopt_, theta = make(name)
    params, states, updates = steps(lopt_, theta, SEQUENCE)
    for step in range(len(SEQUENCE)):
        assert all_finite(updates[step], states[step + 1])
    assert updates[1]["w"][1, 2] == 0  # the NaN entry does not move
    if lopt_.needs_loss:  # a NaN loss reaches every update entry: none moves (finite accumulators go on)
        assert all((u == 0).all() for u in leaves(updates[3]))
    assert not held(updates[4], states[4], states[5])  # and training goes on
    assert all_finite(params)


@pytest.mark.parametrize("name", ["learnable_adam", "learnable_sgdm"])
def test_a_nan_entry_is_contained_to_its_entry(name):
    """Per-entry rules: the other entries take exactly the step they take without the NaN."""
    lopt_, theta = make(name)
    _, states, updates = steps(lopt_, theta, SEQUENCE[:2])
    replaced = {**SEQUENCE[1][0], "w": SEQUENCE[1][0]["w"].at[1, 2].set(0.3)}
    _, _, clean_updates = steps(lopt_, theta, [SEQUENCE[0], (replaced, SEQUENCE[1][1])])
    others = np.ones((3, 4), bool)
    others[1, 2] = False
    np.testing.assert_array_equal(np.asarray(updates[1]["w"])[others], np.asarray(clean_updates[1]["w"])[others])
    np.testing.assert_array_equal(np.asarray(updates[1]["b"]), np.asarray(clean_updates[1]["b"]))
    assert updates[1]["w"][1, 2] == 0 and clean_updates[1]["w"][1, 2] != 0
    for new, old in zip(float_leaves(states[2]), float_leaves(states[1])):  # the NaN entry keeps its old state
        if new.shape == (3, 4):
            assert new[1, 2] == old[1, 2]


def test_a_blown_up_output_is_zeroed():
    lopt_ = lopt.learned.get("learnable_sgdm")
    theta = {**lopt_.init(jax.random.key(0)), "log_lr": jnp.float32(200.0)}  # exp(200) = inf in float32
    params, states, updates = steps(lopt_, theta, [(grads(1.0), jnp.float32(1.0))])
    assert all((u == 0).all() for u in leaves(updates[0]))
    for a, b in zip(leaves(params), leaves(PARAMS)):
        np.testing.assert_array_equal(a, b)
    assert all_finite(states[1])


def test_finite_steps_are_unchanged_by_the_guard():
    lopt_, theta = make("mlp")
    opt = lopt_.optimizer(theta, num_steps=100)
    state = opt.init(PARAMS)
    guarded, _ = opt.update(grads(1.0), state, PARAMS, loss=jnp.float32(1.0))
    impl = lopt_._build(theta, jnp.float32(100))
    raw, _ = impl.update(grads(1.0), state, PARAMS, jnp.float32(1.0), None)
    for a, b in zip(leaves(guarded), leaves(raw)):
        np.testing.assert_array_equal(a, b.astype(a.dtype))
