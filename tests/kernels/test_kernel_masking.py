"""The fused steps mask non-finite entries inside their own pass, as the XLA path does.

``lopt.learned.mask_non_finite`` is elementwise, so XLA fuses it into the XLA path's step; it
cannot fuse it into a Pallas custom call, where it became a second pass over the whole state
(on the H200 at 100M parameters it took ``nominal``'s fused optax step from 3.6 to 6.8 ms). The
kernels now mask inside their pass: these tests check both that the result still equals the
XLA path's entry by entry when gradients hold NaN and infinities, and that the traced step has
no full-size mask left outside the kernel.
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import kernels
from lopt.learned import MLPLOpt, NominalLOpt

SHAPES = {"b": (7,), "w": (33, 5), "t": (2, 3, 2, 5)}
BAD = {"w": [(0, 0), (4, 2), (32, 4)], "t": [(1, 2, 1, 4)], "b": [(3,)]}  # NaN, +inf, -inf, ...


def _theta(lopt):
    theta = lopt.init(jax.random.key(0))
    if isinstance(lopt, NominalLOpt):  # init's last layer is zero: make the network matter
        theta["network"]["w2"] = 0.3 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    return theta


def _grads(rng, params):
    grads = {k: np.asarray(rng.standard_normal(v.shape), np.float32) for k, v in params.items()}
    poison = [np.nan, np.inf, -np.inf]
    for k, entries in BAD.items():
        for i, entry in enumerate(entries):
            grads[k][entry] = poison[i % 3]
    return {k: jnp.asarray(v) for k, v in grads.items()}


def _run(lopt, mode, steps=3):
    """Three steps through ``opt.update`` (the second with poisoned gradients); the last jaxpr."""
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    opt = lopt.optimizer(_theta(lopt), num_steps=20)
    with kernels.mode_scope(mode):
        step = jax.jit(lambda g, s, p: opt.update(g, s, p, loss=jnp.float32(1.0)))
        state, history = opt.init(params), []
        for i in range(steps):
            grads = _grads(rng, params) if i == 1 else jax.tree.map(lambda p: jnp.sin(3.0 * p), params)
            updates, state = step(grads, state, params)
            params = jax.tree.map(jnp.add, params, updates)
            history.append((updates, state))
        jaxpr = jax.make_jaxpr(step)(grads, state, params)
    return history, jaxpr


def _full_size_masks(jaxpr, sizes):
    """``is_finite`` ops outside any ``pallas_call`` whose operand has one of ``sizes`` entries."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            continue
        if eqn.primitive.name == "is_finite" and int(np.prod(eqn.invars[0].aval.shape)) in sizes:
            found.append(eqn.invars[0].aval.shape)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _full_size_masks(sub, sizes)
    return found


LOPTS = [MLPLOpt(), NominalLOpt(), NominalLOpt(step_size="distance", relative_initial_distance=1e-3),
         MLPLOpt(state_dtype="bfloat16"), NominalLOpt(state_dtype="bfloat16")]
LOPT_IDS = ["mlp", "nominal", "nominal_distance", "mlp_bf16_state", "nominal_bf16_state"]
# On a GPU the compiled kernels run too: their finiteness test is inline PTX there (tiles.finite_or's ptx),
# which interpret mode does not run (`pytest tests/kernels/test_kernel_masking.py` on the GPU machine)
KERNEL_MODES = ["interpret"] + (["pallas"] if jax.default_backend() == "gpu" else [])


@pytest.mark.parametrize("mode", KERNEL_MODES)
@pytest.mark.parametrize("lopt", LOPTS, ids=LOPT_IDS)
def test_poisoned_gradients_masked_in_kernel_as_in_xla(lopt, mode):
    fused, jaxpr = _run(lopt, mode)
    xla, _ = _run(lopt, "xla")
    # the GPU's products (TF32 for mlp's network) round more than the CPU's float32
    rtol, atol = (2e-4, 1e-7) if mode == "interpret" else (2e-2, 1e-5)
    if lopt.state_dtype == "bfloat16":  # a value the two paths compute a little apart may round apart
        # (one bfloat16 unit, 2**-8 relative; a momentum near 1e-3 that rounded apart keeps its
        # ~4e-6 difference after a step that brings it near zero)
        rtol, atol = max(rtol, 2**-7), max(atol, 1e-5)
    for (uf, sf), (ux, sx) in zip(fused, xla):
        for k in SHAPES:
            assert np.all(np.isfinite(uf[k])), k
            np.testing.assert_allclose(uf[k], ux[k], rtol=rtol, atol=atol, err_msg=k)
        for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(sx)):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    poisoned_updates, poisoned_state = fused[1]
    before = jax.tree.leaves(fused[0][1].momentum)
    after = jax.tree.leaves(poisoned_state.momentum)
    for k, entries in BAD.items():
        for entry in entries:
            assert float(poisoned_updates[k][entry]) == 0.0, (k, entry)
    # a poisoned entry keeps its momentum; its neighbours move (leaves in key order: b, t, w)
    w_before, w_after = np.asarray(before[2]), np.asarray(after[2])
    np.testing.assert_array_equal(w_after[0, 0], w_before[0, 0])
    assert not np.allclose(w_after[1, 1], w_before[1, 1])
    # the kernel masked inside its pass: no mask over a whole rank >= 2 tensor outside it
    assert "pallas_call" in str(jaxpr)
    sizes = {int(np.prod(s)) for k, s in SHAPES.items() if len(s) >= 2}
    sizes |= {n * k for n in list(sizes) for k in (3, 6)}  # momenta [n, k]
    assert _full_size_masks(jaxpr.jaxpr, sizes) == []


def test_xla_path_still_masks_through_the_wrapper():
    """The XLA path masks itself (the Transform says so); nothing non-finite gets through."""
    lopt = NominalLOpt()
    (_, (u, s), _), jaxpr = _run(lopt, "xla")
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((u, s)))
    assert lopt._build(_theta(lopt), 20).masked
    # one mask per state leaf and update, not two: count the full-size masks of "w"'s momenta
    assert _full_size_masks(jaxpr.jaxpr, {33 * 5 * 3}) == [(33, 5, 3)]
