"""Offline datasets: the IDX reader, IDX directories, Fashion-MNIST, digits, batch sampling."""

from __future__ import annotations

import gzip
import lzma

import jax
import numpy as np
import pytest

from lopt.tasks import datasets
from lopt.tasks.datasets import catalog
from lopt.tasks.datasets.idx import find_idx_file


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.mark.parametrize(("dtype", "code"), [(np.uint8, 0x08), (np.int8, 0x09), (">i2", 0x0B),
                                             (">i4", 0x0C), (">f4", 0x0D), (">f8", 0x0E)])
def test_read_idx_round_trips_every_dtype(tmp_path, dtype, code):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if np.dtype(dtype).kind == "u":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(_idx_bytes(array, code))
    out = datasets.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_reads_gzip(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "a-idx2-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(array, 0x08)))
    np.testing.assert_array_equal(datasets.read_idx(path), array)
    np.testing.assert_array_equal(datasets.read_idx(str(path)), array)


def test_read_idx_reads_xz_and_finds_every_packing(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = _idx_bytes(array, 0x08)
    (tmp_path / "a-idx2-ubyte.xz").write_bytes(lzma.compress(raw))
    found = find_idx_file(tmp_path, "a-idx2-ubyte")
    assert found.name == "a-idx2-ubyte.xz"
    np.testing.assert_array_equal(datasets.read_idx(found), array)
    (tmp_path / "a-idx2-ubyte.gz").write_bytes(gzip.compress(raw))  # gzip is preferred over xz
    assert find_idx_file(tmp_path, "a-idx2-ubyte").name == "a-idx2-ubyte.gz"
    with pytest.raises(FileNotFoundError, match=r"b-idx2-ubyte\[\.gz\|\.xz\]"):
        find_idx_file(tmp_path, "b-idx2-ubyte")
    bad = tmp_path / "c-idx2-ubyte.xz"
    bad.write_bytes(lzma.compress(raw)[:-8])  # truncated xz stream
    with pytest.raises(ValueError, match="not a valid xz file"):
        datasets.read_idx(bad)
    bad.write_bytes(raw)  # not compressed at all
    with pytest.raises(ValueError, match="remove the .xz suffix"):
        datasets.read_idx(bad)


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(bytes([1, 2, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="bad magic"):
        datasets.read_idx(path)
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))  # unknown dtype code
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(path)


def test_read_idx_rejects_truncated_files(tmp_path):
    data = _idx_bytes(np.arange(20, dtype=np.uint8).reshape(4, 5), 0x08)
    path = tmp_path / "t-idx2-ubyte"
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(path)
    path.write_bytes(data[:6])  # inside the header
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(path)
    gz = tmp_path / "t-idx2-ubyte.gz"
    gz.write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(ValueError, match="gzip"):
        datasets.read_idx(gz)
    gz.write_bytes(data)  # not compressed at all
    with pytest.raises(ValueError, match="gzip"):
        datasets.read_idx(gz)


def _write_fake_idx_dir(directory, n_train=60, n_test=20, size=10, compress=("train-images",)):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 3, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 3, n_test).astype(np.uint8),
    }
    for name, array in arrays.items():
        raw = _idx_bytes(array, 0x08)
        if any(name.startswith(c) for c in compress):
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


def test_register_idx_directory_and_load(tmp_path):
    arrays = _write_fake_idx_dir(tmp_path / "fake")
    datasets.register_idx_directory("fake_idx_test", tmp_path / "fake", num_classes=3, num_valid=15)
    assert "fake_idx_test" in datasets.names()
    ds = datasets.load("fake_idx_test", 8)
    assert ds.info.input_shape == (8, 8, 1) and ds.info.num_classes == 3
    assert dict(ds.info.sizes) == {"train": 45, "valid": 15, "test": 20}
    np.testing.assert_array_equal(ds.splits["valid"]["y"], arrays["train-labels-idx1-ubyte"][45:])
    np.testing.assert_array_equal(ds.splits["test"]["y"], arrays["t10k-labels-idx1-ubyte"])
    batch = ds.sample(jax.random.key(0), "train", 5)
    assert batch["x"].shape == (5, 8, 8, 1) and batch["x"].dtype == np.float32


def test_load_idx_prefix_uses_a_sixth_of_a_small_training_set_for_validation(tmp_path):
    arrays = _write_fake_idx_dir(tmp_path / "d", size=28, compress=())
    ds = datasets.load(f"idx:{tmp_path / 'd'}", 28)
    assert dict(ds.info.sizes) == {"train": 50, "valid": 10, "test": 20}
    np.testing.assert_array_equal(ds.splits["train"]["x"][..., 0], arrays["train-images-idx3-ubyte"][:50])


def test_missing_idx_directory_raises_dataset_not_found(tmp_path):
    datasets.register_idx_directory("missing_idx_test", tmp_path / "nope")
    with pytest.raises(datasets.DatasetNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load("missing_idx_test", 8)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    catalog._load_raw.cache_clear()
    catalog._load_resized.cache_clear()
    try:
        with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
            datasets.load("fashion_mnist", 8)
        assert isinstance(err.value, FileNotFoundError)
        assert "LOPT_FASHION_MNIST_DIR" in str(err.value)
    finally:  # forget the failure so later tests load the real files again
        catalog._load_raw.cache_clear()
        catalog._load_resized.cache_clear()


def test_fashion_mnist_sizes_and_normalisation(needs_fashion):
    ds = datasets.load("fashion_mnist", 28)
    assert dict(ds.info.sizes) == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert ds.info.input_shape == (28, 28, 1) and ds.info.num_classes == 10
    batch = ds.sample(jax.random.key(0), "train", 4096)
    x = np.asarray(batch["x"], np.float64)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1.0) < 0.05
    assert set(np.unique(batch["y"]).tolist()) == set(range(10))
    small = datasets.load("fashion_mnist", 8)
    assert small.info.input_shape == (8, 8, 1) and dict(small.info.sizes) == dict(ds.info.sizes)


def test_digits_sizes():
    ds = datasets.load("digits", 8)
    assert dict(ds.info.sizes) == {"train": 1200, "valid": 300, "test": 297}
    assert ds.info.input_shape == (8, 8, 1) and ds.info.num_classes == 10
    assert datasets.load("digits", 16).info.input_shape == (16, 16, 1)


@pytest.mark.parametrize("size", [13, 0, 32, "8"])
def test_unsupported_image_size_is_rejected(size):
    with pytest.raises(ValueError, match="image_size"):
        datasets.load("digits", image_size=size)


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="imagenet.*digits"):
        datasets.load("imagenet", 8)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_sampling_is_deterministic_per_key_and_within_bounds(split):
    ds = datasets.load("digits", 8)
    a = ds.sample(jax.random.key(3), split, 64)
    b = ds.sample(jax.random.key(3), split, 64)
    c = ds.sample(jax.random.key(4), split, 64)
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].shape == (64, 8, 8, 1) and a["y"].shape == (64,) and a["y"].dtype == np.int32
    assert np.all((np.asarray(a["y"]) >= 0) & (np.asarray(a["y"]) < 10))
    # Every sampled example is an example of that split, with its label.
    stored = np.asarray(ds.splits[split]["x"]).reshape(ds.info.size(split), -1)
    labels = np.asarray(ds.splits[split]["y"])
    raw = np.round((np.asarray(a["x"], np.float64) - ds.info.x_shift) / ds.info.x_scale)
    for row, label in zip(raw.reshape(64, -1).astype(np.uint8), np.asarray(a["y"])):
        matches = np.flatnonzero(np.all(stored == row, axis=1))
        assert matches.size and label in labels[matches]


def test_sampling_works_under_jit_and_vmap():
    ds = datasets.load("digits", 8)
    keys = jax.random.split(jax.random.key(0), 3)
    batches = jax.jit(jax.vmap(lambda d, k: d.sample(k, "train", 4), in_axes=(None, 0)))(ds, keys)
    assert batches["x"].shape == (3, 4, 8, 8, 1)
    np.testing.assert_array_equal(batches["y"][1], ds.sample(keys[1], "train", 4)["y"])


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match="split='training'"):
        datasets.load("digits", 8).sample(jax.random.key(0), "training", 2)


def test_synthetic_is_always_available():
    assert "synthetic" in datasets.available()
    ds = datasets.load("synthetic", 16)
    assert dict(ds.info.sizes) == {"train": 2048, "valid": 512, "test": 512}


def test_normalisation_statistics_of_uint8_images_equal_the_float64_ones():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 9, 7, 1)).astype(np.uint8)
    ds = datasets.Dataset.from_numpy("u8", {s: (x, np.zeros(len(x), np.int32)) for s in ("train", "valid", "test")},
                                     num_classes=2)
    f = x.astype(np.float64)
    assert ds.info.x_scale == pytest.approx(1.0 / f.std(), rel=1e-13)
    assert ds.info.x_shift == pytest.approx(-f.mean() / f.std(), rel=1e-13)
    constant = np.full((4, 2, 2, 1), 7, np.uint8)  # zero spread: scale 1, not a division by zero
    flat = datasets.Dataset.from_numpy("c", {s: (constant, np.zeros(4, np.int32)) for s in ("train", "valid", "test")},
                                       num_classes=1)
    assert flat.info.x_scale == 1.0 and flat.info.x_shift == -7.0
