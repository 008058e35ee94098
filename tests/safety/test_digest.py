"""Every file a user may load carries a SHA-256 digest: a damaged theta is refused, naming the file."""

import json
import struct

import jax
import numpy as np
import pytest

import lopt
from lopt import checkpoint
from lopt.checkpoint import DigestMismatchError
from lopt.cli import main


@pytest.fixture
def theta_file(tmp_path):
    lopt_ = lopt.learned.get("mlp", hidden_size=8)
    theta = lopt_.init(jax.random.key(0))
    path = lopt.learned.save_theta(tmp_path / "theta.safetensors", lopt_, theta, extra={"note": "x"})
    return path, theta


def _header_length(path):
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_flipped_bytes_in_the_tensors_are_refused(theta_file, capsys):
    path, _ = theta_file
    raw = bytearray(path.read_bytes())
    start = 8 + _header_length(path)
    middle = start + (len(raw) - start) // 2
    raw[middle:middle + 32] = bytes(b ^ 0xFF for b in raw[middle:middle + 32])  # 32 flipped bytes, the case
    path.write_bytes(bytes(raw))
    with pytest.raises(DigestMismatchError, match=r"theta.safetensors' is damaged.*SHA-256"):
        lopt.learned.load_theta(path)
    assert main(["eval", str(path), "--suite", "quick", "--no-progress"]) == 2  # one line, exit 2
    err = capsys.readouterr().err
    assert "is damaged" in err and str(path) in err and "Traceback" not in err


def test_a_changed_value_in_the_metadata_is_refused(theta_file):
    path, _ = theta_file
    raw = path.read_bytes()
    n = _header_length(path)
    header = raw[8:8 + n].decode()
    assert '\\"hidden_size\\": 8' in header
    tampered = header.replace('\\"hidden_size\\": 8', '\\"hidden_size\\": 9')  # same length: offsets still valid
    path.write_bytes(raw[:8] + tampered.encode() + raw[8 + n:])
    with pytest.raises(DigestMismatchError, match="is damaged"):
        checkpoint.read_metadata(path)


def test_file_without_a_digest_loads_with_a_warning(theta_file):
    """Files written before digests existed: same tensors, no "sha256" in the document."""
    path, theta = theta_file
    raw = path.read_bytes()
    n = _header_length(path)
    header = json.loads(raw[8:8 + n])
    doc = json.loads(header["__metadata__"]["lopt"])
    del doc["sha256"]
    header["__metadata__"]["lopt"] = json.dumps(doc)
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    assert checkpoint.stored_digest(path) is None
    with pytest.warns(UserWarning, match="has no SHA-256 digest"):
        loaded, lopt_ = lopt.learned.load_theta(path)
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    lopt.learned.save_theta(path, lopt_, loaded)
    assert len(checkpoint.stored_digest(path)) == 64  # re-saving adds one


def test_every_file_written_has_a_digest_that_verifies(tmp_path):
    path = checkpoint.save_tree(tmp_path / "t.safetensors", {"w": np.arange(6.0).reshape(2, 3)}, {"step": 1})
    digest = checkpoint.stored_digest(path)
    assert len(digest) == 64
    tree, meta = checkpoint.load_tree(path)
    assert meta == {"step": 1} and tree["w"].shape == (2, 3)
