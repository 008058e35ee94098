"""``LearnedOptimizer(..., compile=True)``: the compiled step equals JAX's; clean fallbacks.

Compiling with inductor takes minutes on a loaded 2-core CPU, so the test that really
compiles runs only when asked for (``-m slow`` or ``LOPT_RUN_SLOW=1``); the fallbacks (no
``torch.compile``; a compiler failure) are checked in every run.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))

from test_equal_trajectories import assert_same_trajectory, jax_trajectory, torch_trajectory
from trajectory_helpers import NUM_STEPS, perturbed_theta, problem

import lopt.learned
import lopt.torch
from lopt.torch import compiled


def run(name, *, compile, num_steps=NUM_STEPS, steps=range(NUM_STEPS), state_dtype=None, **config):
    lopt_ = lopt.learned.get(name, **config)
    theta = perturbed_theta(lopt_, seed=1)
    params, grads, losses = problem(seed=2)
    got, opt, _ = torch_trajectory(
        lambda ps: lopt.torch.LearnedOptimizer(
            ps, (theta, lopt_), num_steps=num_steps, compile=compile, state_dtype=state_dtype
        ),
        params,
        grads,
        losses,
        steps=steps,
    )
    return got, opt, (lopt_, theta, params, grads, losses)


def test_compile_must_be_a_bool():
    with pytest.raises(TypeError, match="compile='yes'"):
        run("nominal", compile="yes")


def test_without_torch_compile_warns_and_steps_eagerly(monkeypatch):
    monkeypatch.setattr(compiled, "compile_unavailable_reason", lambda: "no compiler here")
    with pytest.warns(RuntimeWarning, match="no compiler here.*eager"):
        got, opt, _ = run("nominal", compile=True, steps=range(5))
    assert not opt._port._compiled.active
    want, _, _ = run("nominal", compile=False, steps=range(5))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_compiler_failure_falls_back_before_touching_state(monkeypatch):
    """A compiler error at the first call: warn, step eagerly, same trajectory as eager."""
    from torch._dynamo.exc import TorchDynamoException

    def failing_compile(fn, **kwargs):
        def call(*args):
            raise TorchDynamoException("inductor: no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        got, opt, _ = run("mlp", compile=True, steps=range(5))
    assert not opt._port._compiled.active
    want, _, _ = run("mlp", compile=False, steps=range(5))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_other_errors_are_not_swallowed(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise ValueError("a bug, not a compiler failure")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(ValueError, match="a bug"):
        run("nominal", compile=True, steps=range(1))


def skip_unless_compiling(request):
    """Skips a test that really compiles unless slow tests were asked for and compiling can run."""
    if "slow" not in (request.config.getoption("markexpr") or "") and os.environ.get(
        "LOPT_RUN_SLOW"
    ) != "1":
        pytest.skip("compiles with inductor (minutes on CPU); run with -m slow or LOPT_RUN_SLOW=1")
    if compiled.compile_unavailable_reason() is not None:
        pytest.skip(compiled.compile_unavailable_reason())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside torch's inductor
@pytest.mark.parametrize("name, config", [("nominal", {}), ("mlp", {}),
                                          ("nominal", {"step_size": "distance", "anchored_direction": True})])
def test_compiled_step_matches_jax_over_100_steps(name, config, request):
    skip_unless_compiling(request)
    got, opt, (lopt_, theta, params, grads, losses) = run(name, compile=True, **config)
    assert opt._port._compiled.active, "fell back to eager: the compiled path was not tested"
    if name == "nominal":
        assert opt._port._factored.active, "the factored step fell back to eager"
    if config.get("step_size") == "distance":
        assert opt._port._distance_sums.active, "the distance pass fell back to eager"
    want = jax_trajectory(lopt_, theta, params, grads, losses, NUM_STEPS)
    assert_same_trajectory(got, want, params)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside torch's inductor
@pytest.mark.parametrize("name", ["nominal", "mlp"])
def test_compiled_step_with_bfloat16_state_matches_the_eager_one(name, request):
    """The rounding is compiled too (one pass over the compiled rows function's float32 results)
    and draws the eager rounding's bits (the JAX comparison of bfloat16 state is in
    test_bfloat16_state.py)."""
    skip_unless_compiling(request)
    got, opt, (_, _, params, _, _) = run(name, compile=True, state_dtype="bfloat16")
    assert opt._port._compiled.active, "fell back to eager: the compiled path was not tested"
    assert opt._port._rounding.active, "the rounding fell back to eager: its compiled form was not tested"
    want, _, _ = run(name, compile=False, state_dtype="bfloat16")
    assert_same_trajectory(got, want, params)


def test_the_distance_passes_two_forms_agree():
    """The elementwise form of the distance step's per-tensor pass (what compiles) equals the eager
    one: the same new ``grad_sum`` and the same two sums, to float32 rounding."""
    from lopt.torch.architectures import nominal

    gen = torch.Generator().manual_seed(3)
    g, p, p0, s = (torch.randn(1001, generator=gen) for _ in range(4))
    weight = torch.tensor(0.37)
    s_eager, s_fused = s.clone(), s.clone()
    want = nominal._distance_sums_eager(g, p, p0, s_eager, weight, 0.9)
    got = nominal._distance_sums_fused(g, p, p0, s_fused, weight, 0.9)
    np.testing.assert_allclose(s_fused.numpy(), (0.9 * s + weight * g).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s_fused.numpy(), s_eager.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.numpy(), [float(g @ (p0 - p)), float(s_eager.abs().sum())], rtol=1e-5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
