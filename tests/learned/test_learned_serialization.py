"""Saving and loading theta: round trips, architecture/config checks, no pickle."""

from __future__ import annotations

import json
import struct

import jax
import numpy as np
import pytest

import lopt.checkpoint
import lopt.learned
from lopt.learned import load_theta, save_theta


@pytest.mark.parametrize("name", lopt.learned.names())
def test_round_trip_every_architecture(tmp_path, name):
    lo = lopt.learned.get(name)
    theta = lo.init(jax.random.key(3))
    path = save_theta(tmp_path / f"{name}.safetensors", lo, theta, extra={"step": 7})
    # Without the optimizer: rebuilt from the file's name and config.
    loaded, lo2 = load_theta(path)
    assert lo2 == lo
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert jax.tree.structure(loaded) == jax.tree.structure(theta)
    # With the optimizer.
    loaded2, lo3 = load_theta(path, lo)
    assert lo3 is lo
    assert jax.tree.structure(loaded2) == jax.tree.structure(theta)
    meta = lopt.checkpoint.read_metadata(path)
    assert meta["architecture"] == name and meta["extra"] == {"step": 7}
    assert meta["theta_format_version"] == lopt.learned.THETA_FORMAT_VERSION
    json.dumps(meta)  # plain JSON


def test_non_default_config_round_trips(tmp_path):
    lo = lopt.learned.get("mlp", hidden_size=8, decays=[0.5, 0.9], fraction_features=True)
    theta = lo.init(jax.random.key(0))
    path = save_theta(tmp_path / "t.safetensors", lo, theta)
    _, lo2 = load_theta(path)
    assert lo2 == lo and lo2.decays == (0.5, 0.9)


def test_loading_into_another_architecture_names_the_leaf(tmp_path):
    lo = lopt.learned.get("mlp")
    path = save_theta(tmp_path / "mlp.safetensors", lo, lo.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"`mlp`.*`lstm`.*leaf 'lstm0/b'"):
        load_theta(path, lopt.learned.get("lstm"))


def test_loading_into_another_config_names_the_leaf(tmp_path):
    lo = lopt.learned.get("mlp")
    path = save_theta(tmp_path / "mlp.safetensors", lo, lo.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"leaf 'mlp/b0' is float32\[32\] in the file.*\[16\]"):
        load_theta(path, lopt.learned.get("mlp", hidden_size=16))


def test_same_shapes_different_config_names_the_field(tmp_path):
    lo = lopt.learned.get("mlp")
    path = save_theta(tmp_path / "mlp.safetensors", lo, lo.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"step_mult=0\.001.*step_mult=0\.01"):
        load_theta(path, lopt.learned.get("mlp", step_mult=0.01))


def test_save_checks_theta(tmp_path):
    lo = lopt.learned.get("learnable_sgdm")
    with pytest.raises(ValueError, match=r"leaf 'logit_momentum' is missing"):
        save_theta(tmp_path / "x.safetensors", lo, {"log_lr": np.float32(0.0)})
    with pytest.raises(TypeError, match="LearnedOptimizer"):
        save_theta(tmp_path / "x.safetensors", "mlp", {})


def test_plain_checkpoint_is_not_a_theta_file(tmp_path):
    path = lopt.checkpoint.save_tree(tmp_path / "t.safetensors", {"a": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="not a theta file"):
        load_theta(path)


def test_newer_theta_format_is_refused(tmp_path):
    lo = lopt.learned.get("learnable_sgdm")
    theta = lo.init(None)
    meta = {
        "kind": "lopt.theta",
        "theta_format_version": 99,
        "architecture": lo.name,
        "config": lo.config(),
    }
    path = lopt.checkpoint.save_tree(tmp_path / "t.safetensors", theta, meta)
    with pytest.raises(ValueError, match="upgrade lopt"):
        load_theta(path)


def test_file_is_plain_safetensors_without_code(tmp_path):
    lo = lopt.learned.get("learnable_adam")
    path = save_theta(tmp_path / "adam.safetensors", lo, lo.init(None))
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert set(header) == {"__metadata__", "log_eps", "log_lr", "logit_b1", "logit_b2"}
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:2]
