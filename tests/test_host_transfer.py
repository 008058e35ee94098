"""lopt.host_transfer.to_device: jnp.asarray's values and dtypes, without compiling a program."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.host_transfer import to_device
from lopt.tasks.datasets.images import resize_uint8


def _compiles(caplog, fn) -> list[str]:
    """The names of the programs JAX compiles while ``fn`` runs."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        fn()
    return [r.getMessage().split(" ")[1] for r in caplog.records if r.getMessage().startswith("Compiling ")]


@pytest.mark.parametrize("value, dtype", [
    (np.linspace(-1.0, 1.0, 7).reshape(7, 1), None),  # float64 becomes float32
    (np.arange(5, dtype=np.int64), None),  # int64 becomes int32
    (np.array(True), None),
    ([[1, 2], [3, 4]], np.float32),
    (np.arange(4, dtype=np.float32), np.int32),
    (np.float64(2.5), None),
])
def test_values_and_dtypes_match_jnp_asarray(value, dtype):
    got, want = to_device(value, dtype), jnp.asarray(value, dtype)
    assert isinstance(got, jax.Array)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_jax_arrays_pass_through_or_convert():
    x = jnp.arange(3.0)
    assert to_device(x) is x and to_device(x, np.float32) is x
    converted = to_device(x, np.int32)
    assert converted.dtype == jnp.int32 and converted.tolist() == [0, 1, 2]


def test_nothing_is_compiled(caplog):
    # the capture sees a compile (of a program never seen before) ...
    assert "jit(<lambda>)" in _compiles(caplog, lambda: jax.jit(lambda v: v * 3.0 + 1.0)(np.ones((3, 11, 5))))
    # ... and to_device of new shapes and dtypes compiles none
    shapes = [(13, 7), (1, 2, 3, 5), (17,)]
    assert _compiles(caplog, lambda: [to_device(np.ones(s, np.float64)) for s in shapes]) == []
    assert _compiles(caplog, lambda: to_device(np.zeros((19, 3)), np.int32)) == []


@pytest.mark.parametrize("bad", ["abc", b"x", {"a": 1}, None, [object()]])
def test_non_arrays_are_refused(bad):
    with pytest.raises(TypeError, match="to_device"):
        to_device(bad)


def test_resize_pads_chunks_without_changing_images(caplog):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(150, 12, 12), dtype=np.uint8)
    want = jax.image.resize(images[..., None].astype(np.float32), (150, 6, 6, 1), "linear", antialias=True)
    want = np.clip(np.round(np.asarray(want)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(resize_uint8(images, 6, chunk=64), want)  # 64 + 64 + 22 padded to 64
    np.testing.assert_array_equal(resize_uint8(images[:100], 6), want[:100])  # one chunk padded to 128
    # another count that pads to a shape already compiled reuses its program
    assert _compiles(caplog, lambda: resize_uint8(images[:90], 6)) == []


@pytest.mark.parametrize("module", ["lopt.host_transfer", "lopt.source_fingerprint"])
def test_docstring_examples(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
