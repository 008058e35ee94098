"""Task normalisation: the map, the fit with Adam, the on-disk cache."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt.meta import normalizer as nm
from lopt.meta.normalizer import (
    LossNormalizer,
    NormalizerCache,
    fit_normalizer,
    normalize_loss,
    normalizer_arrays,
)

QUADRATIC = {"family": "quadratic", "dim": 6, "init_scale": 0.0, "noise": 0.1, "seed": 1}
FAST = {"num_steps": 200, "learning_rates": [0.003, 0.03, 0.3], "num_seeds": 4}


# --- the map ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss, expected", [
    (5.0, 1.0),     # initial -> 1
    (1.0, 0.0),     # best -> 0
    (3.0, 0.5),     # linear in between: (3 - 1) / (5 - 1)
    (0.0, -0.25),   # below best: (0 - 1) / 4
    (13.0, 2.0),    # (13 - 1) / 4 = 3, clipped
    (-20.0, -2.0),  # -5.25, clipped
    (math.nan, 2.0),
    (math.inf, 2.0),
    (-math.inf, 2.0),
])
def test_normalize_loss_by_hand(loss, expected):
    assert float(normalize_loss(loss, 5.0, 1.0)) == pytest.approx(expected)
    assert float(LossNormalizer(5.0, 1.0)(loss)) == pytest.approx(expected)


def test_normalize_loss_broadcasts_under_jit_and_custom_clip():
    losses = jnp.array([[5.0, 1.0], [100.0, jnp.nan]])
    out = jax.jit(lambda x: normalize_loss(x, jnp.array([5.0, 3.0]), jnp.array([1.0, 1.0]), clip=3.0))(losses)
    np.testing.assert_allclose(out, [[1.0, 0.0], [3.0, 3.0]])


def test_loss_normalizer_validation_and_round_trip():
    norm = LossNormalizer(np.float32(3.5), 1)
    assert type(norm.initial_loss) is float and type(norm.best_loss) is float
    assert LossNormalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match="best_loss=2.0 must be below initial_loss=1.0"):
        LossNormalizer(1.0, 2.0)
    with pytest.raises(ValueError, match="initial_loss=nan must be finite"):
        LossNormalizer(math.nan, 0.0)
    with pytest.raises(TypeError, match="initial_loss='1'"):
        LossNormalizer("1", 0.0)
    with pytest.raises(ValueError, match="keys 'initial_loss' and 'best_loss'"):
        LossNormalizer.from_dict({"initial_loss": 1.0})


def test_normalizer_arrays_gather_inside_jit():
    norms = [LossNormalizer(2.0, 1.0), LossNormalizer(10.0, 0.0), LossNormalizer(1.0, -1.0)]
    initial, best = normalizer_arrays(norms)
    assert initial.dtype == jnp.float32 and best.shape == (3,)

    @jax.jit
    def normalized(losses, index):
        return normalize_loss(losses, initial[index], best[index])

    np.testing.assert_allclose(normalized(jnp.array([5.0, 0.0, 1.5]), jnp.array([1, 2, 0])), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="got no normalizers"):
        normalizer_arrays([])
    with pytest.raises(TypeError, match="entry 1 is a tuple"):
        normalizer_arrays([norms[0], (1.0, 0.0)])


# --- fitting ---------------------------------------------------------------------------------


def test_fit_normalizer_on_a_quadratic_with_known_minimum():
    """init_scale=0 starts every seed at x=0, so the exact initial loss is 0.5 x*^T A x*; the
    minimum is 0 and the training-loss noise is ``noise * <eps, x - x*>`` with mean zero."""
    norm = fit_normalizer(QUADRATIC, **FAST)
    task = lopt.tasks.build(QUADRATIC)
    optimum = np.asarray(task.settings["optimum"], np.float64)
    exact_initial = 0.5 * optimum @ np.asarray(task.settings["matrix"], np.float64) @ optimum
    noise_sd = QUADRATIC["noise"] * np.linalg.norm(optimum) / math.sqrt(FAST["num_seeds"])
    assert abs(norm.initial_loss - exact_initial) < 4 * noise_sd
    assert abs(norm.best_loss) < 0.02 * exact_initial
    assert norm.best_loss < norm.initial_loss


def test_fit_normalizer_ignores_diverged_runs(monkeypatch):
    """A learning rate so large that Adam diverges must not turn the best loss into NaN."""
    captured = {}
    real = lopt.inner.train_many

    def spy(*args, **kwargs):
        captured["curves"] = real(*args, **kwargs)
        return captured["curves"]

    monkeypatch.setattr(nm.inner, "train_many", spy)
    # Same shapes as FAST (one compiled program for all the fitting tests in a worker).
    settings = {**FAST, "learning_rates": [1e30, 0.03, 0.3]}
    norm = fit_normalizer({**QUADRATIC, "init_scale": 1.0}, **settings)
    diverged = np.asarray(captured["curves"].diverged)
    assert diverged[0].all() and not diverged[1:].any()
    assert math.isfinite(norm.best_loss) and norm.best_loss < norm.initial_loss


def test_fit_normalizer_errors_name_the_problem():
    with pytest.raises(ValueError, match="learning_rates=.*positive numbers"):
        fit_normalizer(QUADRATIC, learning_rates=[0.1, -1.0])
    with pytest.raises(ValueError, match="num_steps=0 must be a positive integer"):
        fit_normalizer(QUADRATIC, num_steps=0)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        fit_normalizer(QUADRATIC, key=0)
    with pytest.raises(ValueError, match="'family' key"):
        fit_normalizer({"dim": 3})


# --- the cache -------------------------------------------------------------------------------


@pytest.fixture
def counted_fit(monkeypatch):
    """Replaces fit_normalizer by a fake that records its calls (no training)."""
    calls = []

    def fake(cfg, **settings):
        calls.append((cfg, settings))
        return LossNormalizer(initial_loss=float(cfg["dim"]), best_loss=0.5)

    monkeypatch.setattr(nm, "fit_normalizer", fake)
    return calls


def test_cache_second_get_reads_the_file(tmp_path, counted_fit):
    cache = NormalizerCache(tmp_path)
    cfg = {"family": "quadratic", "dim": 7}
    first = cache.get(cfg, num_steps=50)
    assert len(counted_fit) == 1 and first == LossNormalizer(7.0, 0.5)
    path = cache.path(cfg, num_steps=50)
    assert path.is_file() and path.name.startswith("quadratic-")
    document = json.loads(path.read_text())
    assert document["normalizer"] == first.to_dict() and document["cfg"]["dim"] == 7
    assert document["lopt_version"] == lopt.__version__
    # Same request (explicit defaults and a config with its defaults filled in): read, no training.
    full_cfg = dict(lopt.tasks.get("quadratic").complete(cfg))
    assert NormalizerCache(tmp_path).get(full_cfg, num_steps=50, num_seeds=2) == first
    assert len(counted_fit) == 1
    assert list(tmp_path.iterdir()) == [path]


def test_cache_different_settings_or_config_use_different_files(tmp_path, counted_fit, monkeypatch):
    cache = NormalizerCache(tmp_path)
    cfg = {"family": "quadratic", "dim": 3}
    paths = {
        cache.path(cfg),
        cache.path(cfg, num_steps=100),
        cache.path(cfg, learning_rates=[0.1]),
        cache.path(cfg, key=jax.random.key(1)),
        cache.path({**cfg, "seed": 5}),
    }
    with monkeypatch.context() as patch:
        patch.setattr(lopt, "__version__", "999.0")
        paths.add(cache.path(cfg))
    assert len(paths) == 6
    cache.get(cfg)
    cache.get(cfg, num_steps=100)
    assert len(counted_fit) == 2 and len(list(tmp_path.iterdir())) == 2
    with pytest.raises(TypeError, match=r"unknown fit_normalizer settings \['steps'\]"):
        cache.get(cfg, steps=10)


@pytest.mark.parametrize("damage", ["{not json", '{"format": "lopt.normalizer"}', "[]", ""])
def test_cache_recomputes_corrupted_files(tmp_path, counted_fit, damage):
    cache = NormalizerCache(tmp_path)
    cfg = {"family": "quadratic", "dim": 4}
    cache.get(cfg)
    path = cache.path(cfg)
    path.write_text(damage)
    with pytest.warns(RuntimeWarning, match="unreadable cache file .*recomputing"):
        assert cache.get(cfg) == LossNormalizer(4.0, 0.5)
    assert len(counted_fit) == 2
    assert json.loads(path.read_text())["normalizer"] == {"initial_loss": 4.0, "best_loss": 0.5}


def test_cache_get_many_and_default_directory(tmp_path, counted_fit, monkeypatch):
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "base"))
    cache = NormalizerCache()
    assert cache.directory == tmp_path / "base" / "normalizers"
    cfgs = [{"family": "quadratic", "dim": d} for d in (2, 3, 2)]
    norms = cache.get_many(cfgs, progress=False)
    assert [n.initial_loss for n in norms] == [2.0, 3.0, 2.0]
    assert len(counted_fit) == 2
    monkeypatch.delenv("LOPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nm.default_cache_dir() == tmp_path / "xdg" / "lopt" / "normalizers"


def test_cache_end_to_end_without_fakes(tmp_path):
    cache = NormalizerCache(tmp_path)
    settings = {**FAST, "learning_rates": [0.01, 0.02, 0.04]}
    norm = cache.get(QUADRATIC, **settings)
    assert norm.best_loss < norm.initial_loss
    assert cache.get(QUADRATIC, **settings) == norm
