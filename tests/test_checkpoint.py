"""lopt.checkpoint: array-only pytree files (safetensors + JSON), atomic, checked loads."""

from __future__ import annotations

import json
import os
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
import safetensors.numpy

from lopt import checkpoint


def _tree():
    return {
        "w": jnp.arange(6.0).reshape(2, 3),
        "half": jnp.asarray([1.5, -2.0], jnp.bfloat16),
        "layers": [jnp.asarray(3, jnp.int32), {"b": jnp.zeros((0,))}, jnp.asarray(True)],
        "scalar": jnp.asarray(0.25),
    }


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_template(tmp_path):
    tree = _tree()
    path = checkpoint.save_tree(tmp_path / "c.safetensors", tree, {"step": 3, "tags": ["a"]})
    loaded, meta = checkpoint.load_tree(path, like=tree)
    _assert_same(tree, loaded)
    assert meta == {"step": 3, "tags": ["a"]}
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(loaded))


def test_round_trip_without_template_rebuilds_dicts_and_lists(tmp_path):
    tree = _tree()
    path = checkpoint.save_tree(tmp_path / "c.safetensors", tree)
    loaded, meta = checkpoint.load_tree(path)
    _assert_same(tree, loaded)
    assert meta == {}


def test_template_may_be_shape_dtype_structs_and_named_tuples(tmp_path):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = optax.adam(1e-3).init(params)
    path = checkpoint.save_tree(tmp_path / "s.safetensors", state)
    like = jax.eval_shape(lambda: optax.adam(1e-3).init(params))
    loaded, _ = checkpoint.load_tree(path, like=like)
    _assert_same(state, loaded)
    assert type(loaded[0]).__name__ == "ScaleByAdamState"


def test_bfloat16_is_stored_natively(tmp_path):
    path = checkpoint.save_tree(tmp_path / "h.safetensors", {"x": jnp.ones(3, jnp.bfloat16)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8 : 8 + n])["x"]["dtype"] == "BF16"
    loaded, _ = checkpoint.load_tree(path)
    assert loaded["x"].dtype == ml_dtypes.bfloat16


def test_readable_by_the_safetensors_library(tmp_path):
    tree = {"a": np.arange(4, dtype=np.float32), "b": {"c": np.ones((2, 2), np.int32)}}
    path = checkpoint.save_tree(tmp_path / "x.safetensors", tree, {"k": 1})
    tensors = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(tensors["a"], tree["a"])
    np.testing.assert_array_equal(tensors["b/c"], tree["b"]["c"])


def test_empty_and_single_leaf_trees(tmp_path):
    p = checkpoint.save_tree(tmp_path / "e.safetensors", {})
    assert checkpoint.load_tree(p) == ({}, {})
    p = checkpoint.save_tree(tmp_path / "one.safetensors", jnp.ones(3))
    loaded, _ = checkpoint.load_tree(p)
    np.testing.assert_array_equal(loaded, np.ones(3))
    loaded, _ = checkpoint.load_tree(p, like=jnp.zeros(3))
    np.testing.assert_array_equal(loaded, np.ones(3))


@pytest.mark.parametrize(
    ("like", "match"),
    [
        (
            {"w": jnp.zeros((2, 4)), "b": jnp.zeros(3)},
            r"leaf 'w' is float32\[2, 3\] in the file, expected float32\[2, 4\]",
        ),
        (
            {"w": jnp.zeros((2, 3), jnp.bfloat16), "b": jnp.zeros(3)},
            r"leaf 'w' is float32.*expected bfloat16",
        ),
        (
            {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "c": jnp.zeros(1)},
            r"leaf 'c' is missing from the file",
        ),
        ({"w": jnp.zeros((2, 3))}, r"leaf 'b' is in the file but not in the template"),
    ],
)
def test_mismatch_names_the_first_leaf(tmp_path, like, match):
    path = checkpoint.save_tree(
        tmp_path / "m.safetensors", {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    )
    with pytest.raises(ValueError, match=match):
        checkpoint.load_tree(path, like=like)


def test_tree_mismatch_and_check_tree():
    a = {"x": jnp.zeros(2), "y": [jnp.zeros(3)]}
    assert checkpoint.tree_mismatch(a, a) is None
    assert "leaf 'y/0' has shape (4,)" in checkpoint.tree_mismatch(
        {"x": jnp.zeros(2), "y": [jnp.zeros(4)]}, a
    )
    assert "dtype" in checkpoint.tree_mismatch(
        {"x": jnp.zeros(2, jnp.int32), "y": [jnp.zeros(3)]}, a
    )
    assert (
        checkpoint.tree_mismatch(
            {"x": jnp.zeros(2, jnp.int32), "y": [jnp.zeros(3)]}, a, check_dtype=False
        )
        is None
    )
    # Same leaf names, different containers.
    assert "structure" in checkpoint.tree_mismatch({"x": jnp.zeros(2), "y": (jnp.zeros(3),)}, a)
    with pytest.raises(ValueError, match="theta does not match"):
        checkpoint.check_tree({"x": jnp.zeros(2)}, a, what="theta")
    assert checkpoint.leaf_names(a) == ["x", "y/0"]


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a.safetensors"
    checkpoint.save_tree(path, {"x": jnp.ones(2)}, {"v": 1})
    # A failing save (metadata not JSON) leaves the previous file intact.
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save_tree(path, {"x": jnp.zeros(2)}, {"v": object()})
    loaded, meta = checkpoint.load_tree(path)
    np.testing.assert_array_equal(loaded["x"], np.ones(2))
    assert meta == {"v": 1}
    checkpoint.save_tree(path, {"x": jnp.zeros(2)}, {"v": 2})
    assert checkpoint.read_metadata(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["a.safetensors"]


def test_creates_parent_folders(tmp_path):
    path = checkpoint.save_tree(tmp_path / "a" / "b" / "c.safetensors", {"x": jnp.ones(1)})
    assert path.is_file()


def test_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="leaf 'x'"):
        checkpoint.save_tree(tmp_path / "b.safetensors", {"x": "text"})
    with pytest.raises(TypeError, match="leaf 'c'.*complex64"):
        checkpoint.save_tree(tmp_path / "b.safetensors", {"c": jnp.ones(2, jnp.complex64)})
    with pytest.raises(ValueError, match="share the checkpoint name 'a/b'"):
        checkpoint.save_tree(
            tmp_path / "b.safetensors", {"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}}
        )
    with pytest.raises(TypeError, match="metadata must be a dict"):
        checkpoint.save_tree(tmp_path / "b.safetensors", {}, metadata=[1])
    with pytest.raises(FileNotFoundError):
        checkpoint.load_tree(tmp_path / "missing.safetensors")


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a valid lopt checkpoint"):
        checkpoint.load_tree(short)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="out of range"):
        checkpoint.load_tree(huge)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"a": np.ones(2, np.float32)}, str(foreign))
    with pytest.raises(ValueError, match="cannot parse its header"):
        checkpoint.load_tree(foreign)
    # Truncated data.
    good = checkpoint.save_tree(tmp_path / "good.safetensors", {"a": jnp.ones(100)})
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-8])
    with pytest.raises(ValueError, match="inconsistent data offsets"):
        checkpoint.load_tree(truncated)


def test_newer_format_version_is_refused(tmp_path):
    path = checkpoint.save_tree(tmp_path / "v.safetensors", {"a": jnp.ones(1)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    doc = json.loads(header["__metadata__"]["lopt"])
    doc["format_version"] = checkpoint.FORMAT_VERSION + 1
    header["__metadata__"]["lopt"] = json.dumps(doc)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + n :])
    with pytest.raises(ValueError, match="newer than this lopt"):
        checkpoint.load_tree(path)
