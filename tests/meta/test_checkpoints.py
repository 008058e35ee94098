"""CheckpointManager: round trips, retention, damage detection and fallback, crash leftovers."""

from __future__ import annotations

import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import checkpoint
from lopt.meta.checkpoints import CheckpointManager


def make_state(scale: float = 1.0):
    params = {"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": jnp.zeros(3)}
    return {
        "theta": params,
        "opt_state": optax.adam(1e-3).init(params),  # namedtuples, an int32 count, an EmptyState
        "step": jnp.asarray(7, jnp.int32),
        "scale": jnp.asarray([1.5, -2.0], jnp.bfloat16),
        "key": jax.random.key(3),
        "keys": jax.random.split(jax.random.key(4, impl="rbg"), 2),
        "raw_key": jax.random.PRNGKey(5),
        "history": [jnp.float32(scale), jnp.asarray([1, 2], jnp.int32)],
    }


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_of_a_nested_pytree_with_every_kind_of_leaf(tmp_path):
    manager = CheckpointManager(tmp_path)
    state = make_state()
    path = manager.save(12, state, {"note": "hi", "losses": [1.0, 0.5]})
    assert path.name == "ckpt_00000012.safetensors" and manager.list() == [12]
    step, restored, meta = manager.restore(like=state)
    assert step == 12 and meta == {"note": "hi", "losses": [1.0, 0.5]}
    assert_same(restored, state)
    # Key-typed leaves keep working as keys (same random numbers as the originals).
    np.testing.assert_array_equal(jax.random.normal(restored["keys"][1], (2,)),
                                  jax.random.normal(state["keys"][1], (2,)))
    # Shape-only templates work too; without a template, keys come back typed inside dicts/lists.
    _, restored, _ = manager.restore(like=jax.eval_shape(lambda: state))
    assert_same(restored, state)
    _, plain, _ = manager.restore()
    assert plain["key"].dtype == state["key"].dtype and plain["scale"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(plain["opt_state"][0]["mu"]["w"], 0.0)


def test_keep_last_n_latest_step_and_explicit_step(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.latest_step() is None
    for step in (1, 5, 9):
        manager.save(step, {"x": jnp.float32(step)}, {"step": step})
    assert manager.list() == [5, 9] and manager.latest_step() == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000005.safetensors",
                                                          "ckpt_00000009.safetensors"]
    step, tree, meta = manager.restore(step=5)
    assert (step, float(tree["x"]), meta) == (5, 5.0, {"step": 5})
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 1 .*present: \[5, 9\]"):
        manager.restore(step=1)
    keep_all = CheckpointManager(tmp_path / "all", keep=None)
    for step in range(5):
        keep_all.save(step, {"x": jnp.zeros(1)})
    assert keep_all.list() == [0, 1, 2, 3, 4]


def test_saving_an_earlier_step_discards_newer_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (10, 20, 30):
        manager.save(step, {"x": jnp.zeros(1)})
    with pytest.warns(RuntimeWarning, match="saving step 20 discards the newer checkpoints .*00000030"):
        manager.save(20, {"x": jnp.ones(1)})
    assert manager.list() == [10, 20]
    assert float(manager.restore()[1]["x"][0]) == 1.0


def _truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def _cut_last_bytes(path):
    path.write_bytes(path.read_bytes()[:-4])


def _garble_header(path):
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    data[8 : 8 + n] = b"{" * n
    path.write_bytes(bytes(data))


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, problem", [
    (_cut_last_bytes, "inconsistent data offsets"),
    (_truncate, "header length .* out of range"),
    (_garble_header, "cannot parse its header"),
    (_flip_last_byte, "SHA-256"),
    (lambda p: p.write_bytes(b""), "0 bytes long"),
])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, damage, problem):
    manager = CheckpointManager(tmp_path)
    old, new = make_state(1.0), make_state(2.0)
    manager.save(100, old, {"which": "old"})
    path = manager.save(200, new, {"which": "new"})
    damage(path)
    with pytest.warns(RuntimeWarning, match=f"ckpt_00000200.safetensors' is unusable .*{problem}.*"
                                            "falling back to .*ckpt_00000100"):
        step, tree, meta = manager.restore(like=new)
    assert step == 100 and meta == {"which": "old"}
    assert_same(tree, old)
    with pytest.raises(ValueError, match="ckpt_00000200.safetensors' is unusable"):
        manager.restore(like=new, step=200)


def test_file_that_is_not_a_manager_checkpoint_is_unusable(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"x": jnp.zeros(2)})
    checkpoint.save_tree(manager.path(2), {"x": jnp.ones(2)}, {"some": "other file"})
    with pytest.warns(RuntimeWarning, match="not a lopt.meta_checkpoint file"):
        assert manager.restore()[0] == 1


def test_all_corrupted_raises_listing_every_file(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (1, 2):
        _truncate(manager.save(step, make_state()), 0.5)
    with (pytest.warns(RuntimeWarning, match="falling back"),
          pytest.raises(ValueError, match="no usable checkpoint .*ckpt_00000002.*ckpt_00000001")):
        manager.restore(like=make_state())
    with pytest.raises(FileNotFoundError, match="no checkpoints in"):
        CheckpointManager(tmp_path / "empty").restore()


def test_template_mismatch_is_an_error_not_a_fallback(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"w": jnp.zeros(3)})
    manager.save(2, {"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"leaf 'w' is float32\[3\] in the file, expected float32\[4\]"):
        manager.restore(like={"w": jnp.zeros(4)})
    manager.save(3, {"w": jnp.zeros(2, jnp.uint32)})
    with pytest.raises(ValueError, match="leaf 'w' is a PRNG key in the template but raw data"):
        manager.restore(like={"w": jax.random.key(0)})


def test_crash_mid_save_leaves_no_visible_checkpoint_and_temp_files_are_cleaned(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"x": jnp.zeros(2)})

    def crash(fd):
        raise KeyboardInterrupt("killed mid-save")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", crash)
        with pytest.raises(KeyboardInterrupt):
            manager.save(2, {"x": jnp.ones(2)})
    assert manager.list() == [1]
    # A process killed outright leaves its temporary file behind: it is never listed, and the
    # next manager deletes it.
    leftover = tmp_path / ".ckpt_00000002.safetensors.abc123.tmp"
    leftover.write_bytes(manager.path(1).read_bytes()[:50])
    assert manager.list() == [1] and manager.restore()[0] == 1
    CheckpointManager(tmp_path)
    assert not leftover.exists() and manager.list() == [1]


def test_should_save_by_steps_and_by_seconds(tmp_path):
    now = [0.0]
    manager = CheckpointManager(tmp_path, clock=lambda: now[0])
    assert [s for s in range(1, 10) if manager.should_save(s, every_steps=4)] == [4, 8]
    assert not manager.should_save(3)
    assert not manager.should_save(3, every_seconds=60.0)
    now[0] = 61.0
    assert manager.should_save(3, every_seconds=60.0)
    manager.save(3, {"x": jnp.zeros(1)})
    assert not manager.should_save(3, every_steps=1)  # already saved
    assert not manager.should_save(4, every_seconds=60.0)
    now[0] = 125.0
    assert manager.should_save(4, every_seconds=60.0)
    with pytest.raises(ValueError, match="every_steps=0 must be a positive integer"):
        manager.should_save(4, every_steps=0)
    with pytest.raises(ValueError, match="every_seconds=-1 must be a positive number"):
        manager.should_save(4, every_seconds=-1)


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="keep=0 must be a positive integer or None"):
        CheckpointManager(tmp_path, keep=0)
    manager = CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match="step=-1 must be a non-negative integer"):
        manager.save(-1, {"x": jnp.zeros(1)})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        manager.save(1, {"x": jnp.zeros(1)}, metadata=[1])
    with pytest.raises(TypeError, match="JSON-serialisable"):
        manager.save(1, {"x": jnp.zeros(1)}, metadata={"f": object()})
    assert manager.list() == []


def test_metadata_records_step_digest_and_keys(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(4, {"k": jax.random.key(0), "x": jnp.ones(2)}, {"a": 1})
    document = checkpoint.read_metadata(path)
    assert document["step"] == 4 and document["metadata"] == {"a": 1}
    assert document["prng_keys"] == {"k": "threefry2x32"} and len(document["sha256"]) == 64
    json.dumps(document)
