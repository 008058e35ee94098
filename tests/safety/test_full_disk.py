"""A full disk while a checkpoint is written costs nothing already saved."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from lopt import checkpoint


def test_full_disk_during_a_save_keeps_the_previous_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save_tree(path, {"theta": np.arange(4, dtype=np.float32)}, {"step": 1})
    before = path.read_bytes()

    def full(fd):  # the data are written, then the disk reports it is full when they are flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_tree(path, {"theta": np.arange(4, dtype=np.float32) * 2}, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous checkpoint, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no temporary file left behind
    tree, meta = checkpoint.load_tree(path)
    assert meta["step"] == 1 and np.array_equal(tree["theta"], np.arange(4, dtype=np.float32))
