"""Fresh baseline states never share device buffers between leaves, so they can be donated."""

import jax
import jax.numpy as jnp
import pytest

import lopt


@pytest.mark.parametrize("name", lopt.optimizers.names())
def test_state_leaves_have_distinct_buffers(name):
    hparams = {"total_steps": 10} if "total_steps" in lopt.optimizers.defaults(name) else {}
    state = lopt.optimizers.get(name, **hparams).init({"w": jnp.ones((4, 3)), "b": jnp.ones((3,))})
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state) if x.size > 1]
    assert len(pointers) == len(set(pointers)), f"{name}: state leaves share a buffer"
