"""Search spaces: deterministic per key, inside their ranges, usable with get and vmap."""

import jax
import numpy as np
import pytest

from lopt.optimizers import (
    Bernoulli,
    LogUniform,
    OneMinusLogUniform,
    defaults,
    get,
    learning_rate_grid,
    names,
    sample_hparams,
    search_space,
)


@pytest.mark.parametrize("name", names())
def test_deterministic_per_key(name):
    for key in (0, jax.random.key(7), jax.random.PRNGKey(7)):
        a, b = sample_hparams(name, key, num=5), sample_hparams(name, key, num=5)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        assert sample_hparams(name, key) == sample_hparams(name, key)
    one, other = sample_hparams(name, 0, num=5), sample_hparams(name, 1, num=5)
    assert not np.array_equal(one["learning_rate"], other["learning_rate"])


def test_optimizers_draw_independently_from_one_key():
    assert (
        sample_hparams("sgd", 0)["learning_rate"] != sample_hparams("momentum", 0)["learning_rate"]
    )


@pytest.mark.parametrize("name", names())
def test_samples_are_inside_their_ranges(name):
    space = search_space(name)
    hps = sample_hparams(name, 11, num=400)
    assert set(hps) == set(space) and set(hps) <= set(defaults(name))
    for k, dim in space.items():
        assert hps[k].shape == (400,)
        assert hps[k].dtype == (np.bool_ if isinstance(dim, Bernoulli) else np.float32)
        if name == "nadamw" and k.endswith("weight_decay"):  # zeroed by TaskSet's modes
            assert all(v == 0.0 or dim.contains(v) for v in hps[k]), k
        else:
            assert all(dim.contains(v) for v in hps[k]), k


@pytest.mark.parametrize("name", names())
def test_single_draw_is_python_values_and_builds(name):
    hp = sample_hparams(name, jax.random.key(3))
    assert all(type(v) in (float, bool) for v in hp.values())
    extra = {"total_steps": 100} if name == "nadamw" else {}
    get(name, **hp, **extra)


def test_taskset_ranges():
    adam8p = search_space("adam8p")
    assert adam8p["learning_rate"] == LogUniform(1e-8, 10.0)
    assert adam8p["b2"] == OneMinusLogUniform(1e-6, 1.0)
    assert adam8p["exponential_decay"] == LogUniform(1e-6, 1e-3)
    nadamw = search_space("nadamw")
    assert nadamw["learning_rate"] == LogUniform(1e-5, 1.0)
    assert nadamw["eps"] == LogUniform(1e-8, 1e4)


def test_log_uniform_and_one_minus_log_uniform():
    hps = sample_hparams("adam", 5, num=4000)
    log_lr = np.log10(hps["learning_rate"])  # log-uniform on [-8, 1]
    assert abs(np.median(log_lr) - (-3.5)) < 0.3
    assert abs(np.mean(log_lr < -6) - 2 / 9) < 0.03
    log_1mb1 = np.log10(1 - hps["b1"].astype(np.float64))  # 1 - b1 log-uniform on [-4, 0]
    assert abs(np.median(log_1mb1) - (-2.0)) < 0.2


def test_nadamw_joint_weight_decay_modes_and_coin_flips():
    hps = sample_hparams("nadamw", 2, num=3000)
    adamw_zero, l2_zero = hps["adamw_weight_decay"] == 0, hps["l2_weight_decay"] == 0
    assert not np.any(adamw_zero & l2_zero)
    for frac in (adamw_zero.mean(), l2_zero.mean()):
        assert abs(frac - 1 / 3) < 0.04
    for k in ("warmup_fraction", "min_learning_rate_mult"):
        assert abs((hps[k] == 0).mean() - 0.5) < 0.04
    assert abs(hps["nesterov"].mean() - 0.5) < 0.04


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; valid: sgd"):
        sample_hparams("adamw", 0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        search_space("lion")
    with pytest.raises(
        TypeError, match=r"key=1.5 is not an int seed or a jax PRNG key; pass e\.g\. key=0"
    ):
        sample_hparams("adam", 1.5)
    with pytest.raises(ValueError, match="key=-1 is negative"):
        sample_hparams("adam", -1)
    with pytest.raises(ValueError, match="sample_hparams: num=0 is below 1"):
        sample_hparams("adam", 0, num=0)
    with pytest.raises(TypeError, match="sample_hparams: num=2.0 has type float"):
        sample_hparams("adam", 0, num=2.0)
    with pytest.raises(TypeError, match="key is traced"):
        jax.jit(lambda k: sample_hparams("adam", k)["learning_rate"])(jax.random.key(0))


def test_learning_rate_grid():
    grid = learning_rate_grid()
    assert grid.shape == (15,) and grid.dtype == np.float32
    np.testing.assert_allclose([grid[0], grid[-1]], [1e-4, 1.0], rtol=1e-6)
    ratios = grid[1:] / grid[:-1]
    np.testing.assert_allclose(ratios, 10 ** (4 / 14), rtol=1e-5)
    np.testing.assert_allclose(learning_rate_grid(3, 1e-3, 1e-1), [1e-3, 1e-2, 1e-1], rtol=1e-6)
    assert learning_rate_grid(1, 0.5, 0.5).tolist() == [0.5]


def test_learning_rate_grid_errors():
    with pytest.raises(ValueError, match="learning_rate_grid: num=0 is below 1"):
        learning_rate_grid(0)
    with pytest.raises(ValueError, match=r"learning_rate_grid: low=0 is outside \(0, inf\)"):
        learning_rate_grid(15, 0.0, 1.0)
    with pytest.raises(ValueError, match="high=0.1 is below low=1; swap them"):
        learning_rate_grid(15, 1.0, 0.1)
