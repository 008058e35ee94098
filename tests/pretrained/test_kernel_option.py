"""The ``kernel`` execution option: an optimizer's own choice of implementation, whatever the global mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import kernels
from lopt.kernels import nominal_step


def _params():
    return {"w": jax.random.normal(jax.random.key(1), (24, 7)), "b": jnp.zeros(7)}


def _trajectory(opt, steps=4):
    params = _params()
    state = opt.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p + 0.3 * i), params)
        updates, state = opt.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
    return params


def test_the_pretrained_optimizer_with_the_kernel_takes_the_xla_paths_steps():
    """kernel='interpret' runs the fused step (Pallas interpret mode on the CPU) for the matrix and the
    XLA path for the bias; the trajectory equals kernel='xla''s to float32 rounding."""
    fused = _trajectory(lopt.pretrained.optimizer(num_steps=10, kernel="interpret"))
    plain = _trajectory(lopt.pretrained.optimizer(num_steps=10, kernel="xla"))
    moved = float(jnp.max(jnp.abs(plain["w"] - _params()["w"])))
    assert moved > 1e-6  # the comparison below is not between two unmoved copies
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=1e-5, atol=1e-6 * max(moved, 1.0))


@pytest.mark.parametrize(("global_mode", "option", "fused"), [
    ("interpret", "xla", False),  # the option wins over the global mode
    ("xla", "interpret", True),
    ("interpret", None, True),  # None follows the global mode
    ("xla", None, False),
])
def test_the_option_decides_over_the_global_mode(monkeypatch, global_mode, option, fused):
    calls = []
    real = nominal_step.nominal_update

    def spy(*args, **kwargs):
        calls.append(kwargs.get("interpret"))
        return real(*args, **kwargs)

    monkeypatch.setattr(nominal_step, "nominal_update", spy)
    with kernels.mode_scope(global_mode):
        _trajectory(lopt.pretrained.optimizer(num_steps=10, kernel=option), steps=1)
    assert bool(calls) == fused
    if fused:
        assert calls == [True]  # interpret mode off GPU


def test_a_bad_kernel_option_names_the_choices():
    with pytest.raises(ValueError, match="kernel='fast'.*'auto'"):
        lopt.pretrained.optimizer(kernel="fast")
    with pytest.raises(ValueError, match="kernel='fast'"):
        lopt.learned.get("mlp").with_execution_options(kernel="fast")


def test_the_option_is_not_part_of_the_config():
    """An execution option: theta files and configs are the same with or without it."""
    lo = lopt.learned.get("nominal")
    assert lo.with_execution_options(kernel="auto").config() == lo.config()


def test_the_float16_network_option_reaches_the_kernel():
    """kernel_precision='float16': the fused step's network in float16 (emulated in interpret mode),
    within float16's rounding of the float32 kernel's trajectory; a bad value names the choices."""
    half = _trajectory(lopt.pretrained.optimizer(num_steps=10, kernel="interpret", kernel_precision="float16"))
    full = _trajectory(lopt.pretrained.optimizer(num_steps=10, kernel="interpret"))
    start = _params()["w"]
    moved, diff = np.asarray(full["w"] - start), np.asarray(half["w"] - full["w"])
    assert 0 < np.linalg.norm(diff) / np.linalg.norm(moved) < 3e-3
    with pytest.raises(ValueError, match="kernel_precision='half'.*'float16'"):
        lopt.pretrained.optimizer(kernel_precision="half")
