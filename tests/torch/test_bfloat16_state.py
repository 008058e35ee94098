"""bfloat16 optimizer state in PyTorch: the same stochastic rounding as JAX, bit for bit.

The hash that draws the rounding bits is checked against JAX's on indices, steps and salts that
exercise every 32-bit wrap; the rounding on values that cover overflow, infinities and NaN. Then
``nominal`` (plain and with the distance step) and ``mlp`` with ``state_dtype="bfloat16"`` run 100
steps in both frameworks with the parameters in JAX's leaf order (the salts): the bfloat16 states
must agree almost everywhere (a float32 difference of the two frameworks can move a value across
a rounding threshold, rarely) and the trajectories to the float32 tolerance of
``test_equal_trajectories`` loosened where the distance estimate amplifies rounding.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax
import jax.numpy as jnp
import optax

import lopt.learned
import lopt.torch
from lopt.learned import stochastic_rounding as jax_rounding
from lopt.torch import stochastic_rounding as torch_rounding
from lopt.torch.architectures.base import Port

sys.path.insert(0, str(Path(__file__).parent))
from trajectory_helpers import NUM_STEPS, SHAPES, perturbed_theta, problem

KEYS = sorted(SHAPES)  # JAX's leaf order of a dict: the positions that salt the rounding

CASES = [
    ("nominal", {}, 2e-5),
    # the distance estimate explodes on this problem (the params travel ~1e5) and amplifies the
    # frameworks' float32 differences, and the few rounding flips they cause, to ~4e-4 of the
    # travel (float32 state: 3e-6); the states' agreement below is the sharp check here
    ("nominal", {"step_size": "distance", "relative_initial_distance": 1e-3}, 1e-3),
    ("mlp", {}, 2e-5),
]


def test_random_bits_equal_jax_across_wraps():
    index = np.arange(0, 2**32 - 1, 104_729, dtype=np.uint64)
    for step, salt in [(1, 0), (7, 3), (2**31 + 5, 63), (2**32 - 1, 17)]:
        want = np.asarray(jax_rounding.random_bits(jnp.asarray(index.astype(np.uint32)), jnp.uint32(step), salt))
        bits = torch_rounding.random_bits(torch.from_numpy(index.astype(np.int64)), step, salt)
        assert bits.dtype == torch.int32  # the uint32 patterns
        got = bits.numpy().view(np.uint32)
        np.testing.assert_array_equal(got, want)
        per_row = torch_rounding.random_bits(torch.from_numpy(index.astype(np.int64)), step,
                                             torch.full((index.size,), salt))
        np.testing.assert_array_equal(per_row.numpy().view(np.uint32), got)
        for role in (0, 4, jax_rounding.MAX_ROLES - 1):
            np.testing.assert_array_equal(
                torch_rounding.split_bits(bits, role).numpy().view(np.uint32),
                np.asarray(jax_rounding.split_bits(jnp.asarray(want), role)))


def test_rounding_equals_jax_including_overflow_and_non_finite():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * np.exp(rng.uniform(-60, 60, 200_000))).astype(np.float32)
    x[:6] = [np.inf, -np.inf, np.nan, 3.3895314e38, -3.3895314e38, 0.0]  # 3, 4: finite, at the top
    x[6:9] = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8001], np.uint32).view(np.float32)  # NaNs that wrap
    bits = rng.integers(0, 2**32, x.size).astype(np.uint32)
    want = np.asarray(jax_rounding.to_bfloat16(jnp.asarray(x), jnp.asarray(bits)).astype(jnp.float32))
    got = torch_rounding.to_bfloat16(torch.from_numpy(x), torch.from_numpy(bits.view(np.int32)))
    assert got.dtype == torch.bfloat16
    np.testing.assert_array_equal(got.float().numpy(), want)
    assert np.isfinite(got[3:5].float().numpy()).all()  # rounded down, not to infinity
    assert np.isnan(got[6:9].float().numpy()).all()


def test_round_rows_with_a_tensor_step_rounds_as_the_int_step_does():
    """The compiled path's form (step and salts as tensors) draws the same bits as the eager one."""
    n, k = 5_000, 3
    gen = torch.Generator().manual_seed(0)
    m, v = torch.randn(n, k, generator=gen) * 1e3, torch.rand(n, generator=gen)
    index = torch.arange(n) * 977 + 2**31 - 10  # flat indices past int32's range wrap as JAX's uint32
    salt = torch.arange(n) % 7 + 2**30
    step = 2**32 + 5  # the step wraps too
    bits = torch_rounding.random_bits(index, step, salt)
    assert torch.equal(bits, torch_rounding.random_bits(index, torch.tensor(step), salt))
    rm, rv = torch_rounding.round_rows(m, v, index, salt, torch.tensor(step))
    assert torch.equal(rm.view(torch.int16), torch_rounding.round_columns(m, bits).view(torch.int16))
    assert torch.equal(rv.view(torch.int16), torch_rounding.to_bfloat16(v, torch_rounding.split_bits(bits, k)).view(torch.int16))
    assert torch_rounding.round_rows(m, None, index, salt, torch.tensor(step))[1] is None


def test_split_bits_refuses_a_role_out_of_range():
    with pytest.raises(ValueError, match="role=64"):
        torch_rounding.split_bits(torch.zeros(2, dtype=torch.int32), jax_rounding.MAX_ROLES)


def run_both(name, config, state_dtype, steps=NUM_STEPS):
    arch = lopt.learned.get(name, **config, state_dtype=state_dtype)
    theta = perturbed_theta(arch, seed=5)
    params, grads, losses = problem(seed=6)
    opt = arch.optimizer(theta, num_steps=NUM_STEPS)

    @jax.jit
    def run(p):
        def body(carry, xs):
            p, state = carry
            updates, state = opt.update(xs[0], state, p, loss=xs[1])
            p = optax.apply_updates(p, updates)
            return (p, state), p
        return jax.lax.scan(body, (p, opt.init(p)), ({k: g[:steps] for k, g in grads.items()}, losses[:steps]))

    (_, jax_state), jax_params = run({k: jnp.asarray(v) for k, v in params.items()})
    tensors = [torch.nn.Parameter(torch.from_numpy(np.array(params[k]))) for k in KEYS]
    torch_opt = lopt.torch.LearnedOptimizer(tensors, (theta, lopt.learned.get(name, **config)),
                                            num_steps=NUM_STEPS, state_dtype=state_dtype)
    torch_params = {k: [] for k in KEYS}
    for t in range(steps):
        for k, p in zip(KEYS, tensors):
            p.grad = torch.from_numpy(np.array(grads[k][t]))
        torch_opt.step(loss=float(losses[t]))
        for k, p in zip(KEYS, tensors):
            torch_params[k].append(p.detach().numpy().copy())
    return params, jax.tree.map(np.asarray, jax_params), jax_state, {k: np.stack(v) for k, v in torch_params.items()}, [
        torch_opt.state[p] for p in tensors]


@pytest.mark.parametrize("name,config,travel_rtol", CASES, ids=lambda c: str(c))
def test_bfloat16_state_matches_jax_over_100_steps(name, config, travel_rtol):
    params, want, jax_state, got, torch_states = run_both(name, config, "bfloat16")
    _, want_f32, _, _, _ = run_both(name, config, "float32")
    for k in KEYS:
        travel = np.abs(want[k] - params[k]).max()
        err = np.abs(got[k] - want[k]).max()
        assert err <= travel_rtol * travel, f"{k}: error {err:.3g} vs distance {travel:.3g}"
        # the option is in effect: bfloat16 state takes another path than float32 state
        assert np.abs(want_f32[k] - want[k]).max() > 10 * err, k
    accumulators = [("momentum", jax_state.momentum)]
    if name == "nominal":
        accumulators.append(("rms", jax_state.rms))
        if jax_state.distance is not None:
            accumulators += [("grad_sum", jax_state.distance.grad_sum), ("params0", jax_state.distance.params0)]
    for key, tree in accumulators:
        differing = total = 0
        for k, state, leaf in zip(KEYS, torch_states, jax.tree.leaves(tree)):
            assert state[key].dtype == torch.bfloat16 and leaf.dtype == jnp.bfloat16, (key, k)
            a, b = np.asarray(leaf.astype(jnp.float32)), state[key].float().numpy()
            if key == "grad_sum":  # its weights d**2 * lr differ ~3e-4 between the frameworks here
                np.testing.assert_allclose(b, a, rtol=2e-2, atol=1e-30 + 1e-3 * np.abs(a).max(), err_msg=k)
                continue
            differing += int((a != b).sum())
            total += a.size
        assert differing <= 0.02 * total, f"{key}: {differing} of {total} entries differ"


def test_bfloat16_state_dict_round_trip_continues_identically(tmp_path):
    arch = lopt.learned.get("nominal", step_size="distance", relative_initial_distance=1e-3)
    theta = perturbed_theta(arch, seed=7)
    params, grads, losses = problem(seed=8)

    def run(steps, state=None, start=None):
        tensors = [torch.nn.Parameter(torch.from_numpy(np.array((start or params)[k]))) for k in KEYS]
        opt = lopt.torch.LearnedOptimizer(tensors, (theta, arch), num_steps=NUM_STEPS, state_dtype="bfloat16")
        if state is not None:
            opt.load_state_dict(state)
        out = []
        for t in steps:
            for k, p in zip(KEYS, tensors):
                p.grad = torch.from_numpy(np.array(grads[k][t]))
            opt.step(loss=float(losses[t]))
            out.append([p.detach().numpy().copy() for p in tensors])
        return out, opt, tensors

    full, _, _ = run(range(30))
    first, opt, tensors = run(range(15))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    state = torch.load(tmp_path / "opt.pt", weights_only=True)
    rest, opt2, _ = run(range(15, 30), state=state, start={k: p.detach().numpy() for k, p in zip(KEYS, tensors)})
    for got, want in zip(first + rest, full):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert all(s["momentum"].dtype == torch.bfloat16 and s["params0"].dtype == torch.bfloat16
               for s in opt2.state.values())


def test_a_state_dict_loads_into_an_optimizer_with_the_other_state_dtype():
    """float32 state saved, bfloat16 optimizer loading it (and back): the accumulators take the
    loading optimizer's dtype (nearest rounding down, exact up) and it steps on."""
    params = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(5))]
    for saved, loading in (("float32", "bfloat16"), ("bfloat16", "float32")):
        opt = lopt.torch.LearnedOptimizer(params, "default", num_steps=10, state_dtype=saved)
        for p in params:
            p.grad = torch.randn(p.shape)
        opt.step()
        state = opt.state_dict()
        other = lopt.torch.LearnedOptimizer(params, "default", num_steps=10, state_dtype=loading)
        other.load_state_dict(state)
        dtype = getattr(torch, loading)
        for p in params:
            assert other.state[p]["momentum"].dtype == dtype and other.state[p]["factored_full" if p.ndim < 2
                                                                              else "factored_row"].dtype == torch.float32
            np.testing.assert_allclose(other.state[p]["momentum"].float().numpy(),
                                       opt.state[p]["momentum"].float().numpy(), rtol=2**-8)
        other.step()
        assert all(torch.isfinite(p).all() for p in params)


def test_state_dtype_argument_errors():
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="state_dtype='float16'.*bfloat16"):
        lopt.torch.LearnedOptimizer(params, "default", num_steps=5, state_dtype="float16")
    lopt_ = lopt.learned.get("learnable_adam")
    with pytest.raises(ValueError, match="'state_dtype' is not an execution option of 'learnable_adam'"):
        lopt.torch.LearnedOptimizer(params, (lopt_.init(jax.random.key(0)), lopt_), state_dtype="bfloat16")


def test_a_port_without_bfloat16_state_refuses_it_with_the_way_out():
    class Float32Only(Port):
        name = "nominal"

        def init_state(self, param):
            return {}

        def update(self, params, grads, states, count, loss, num_steps, positions=None):
            return []

    arch = lopt.learned.get("nominal", state_dtype="bfloat16")
    with pytest.raises(ValueError, match="state_dtype='bfloat16'.*JAX only.*float32"):
        Float32Only(arch, {})
    assert Float32Only(arch.with_execution_options(state_dtype="float32"), {}).state_dtype == torch.float32
