"""The dataset catalog: named, offline image datasets at a chosen resolution."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lopt.tasks.datasets.dataset import Dataset
from lopt.tasks.datasets.idx import find_idx_file, read_idx
from lopt.tasks.datasets.images import check_image_size, resize_uint8, split_train_valid

__all__ = ["DatasetNotFoundError", "available", "load", "names", "register_idx_directory"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to install them."""


def _load_idx_directory(name: str, directory: str | os.PathLike, num_valid: int | None, hint: str):
    directory = Path(directory)
    try:
        files = {
            part: find_idx_file(directory, stem)
            for part, stem in [
                ("train_x", "train-images-idx3-ubyte"),
                ("train_y", "train-labels-idx1-ubyte"),
                ("test_x", "t10k-images-idx3-ubyte"),
                ("test_y", "t10k-labels-idx1-ubyte"),
            ]
        }
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"Dataset {name!r} is not available: {err} {hint}") from None
    arrays = {part: read_idx(path) for part, path in files.items()}
    if num_valid is None:
        num_valid = min(10_000, len(arrays["train_x"]) // 6)
    train, valid = split_train_valid(arrays["train_x"], arrays["train_y"], num_valid)
    return {"train": train, "valid": valid, "test": (arrays["test_x"], arrays["test_y"])}


def _fashion_mnist():
    directory = os.environ.get("LOPT_FASHION_MNIST_DIR", FASHION_MNIST_DIR)
    hint = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or point "
            "LOPT_FASHION_MNIST_DIR at a directory of its IDX files.")
    return _load_idx_directory("fashion_mnist", directory, 10_000, hint), 10


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DatasetNotFoundError("Dataset 'digits' needs scikit-learn: `pip install scikit-learn`.") from None
    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return {"train": (x[:1200], y[:1200]), "valid": (x[1200:1500], y[1200:1500]),
            "test": (x[1500:], y[1500:])}, 10


def _synthetic():
    """Ten classes of smooth random 28x28 templates plus pixel noise; deterministic."""
    rng = np.random.default_rng(1234)
    coarse = rng.normal(size=(10, 7, 7))
    templates = np.kron(coarse, np.ones((4, 4)))  # 28x28 blocky templates
    templates = (templates - templates.min()) / (templates.max() - templates.min())

    def make(n, seed):
        r = np.random.default_rng(seed)
        y = r.integers(0, 10, size=n).astype(np.int32)
        x = templates[y] * r.uniform(0.6, 1.0, size=(n, 1, 1)) + r.normal(scale=0.25, size=(n, 28, 28))
        return np.clip(x * 255, 0, 255).astype(np.uint8), y

    return {"train": make(2048, 1), "valid": make(512, 2), "test": make(512, 3)}, 10


_LOADERS: dict[str, Callable[[], tuple[dict, int]]] = {
    "fashion_mnist": _fashion_mnist,
    "digits": _digits,
    "synthetic": _synthetic,
}


def register_idx_directory(name: str, directory: str | os.PathLike, *, num_classes: int = 10,
                           num_valid: int | None = None) -> None:
    """Registers a directory of standard IDX files (MNIST layout) as dataset ``name``.

    Args:
        name: the name to load it by (e.g. ``"mnist"``).
        directory: holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz`` or ``.xz``).
        num_classes: number of labels.
        num_valid: the last ``num_valid`` training examples become the validation split;
            ``None`` takes 10,000 or a sixth of the training examples, whichever is smaller
            (10,000 for the 60,000-image MNIST layout).

    Example:
        >>> from lopt.tasks import datasets
        >>> datasets.register_idx_directory("fashion_copy", "/usr/share/datasets/fashion-mnist")
        >>> "fashion_copy" in datasets.names()
        True
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_idx_directory: name={name!r} must be a non-empty string.")
    hint = f"Check that {directory} holds the four IDX files."
    _LOADERS[name] = lambda: (_load_idx_directory(name, directory, num_valid, hint), num_classes)
    _load_raw.cache_clear()
    _load_resized.cache_clear()


def names() -> tuple[str, ...]:
    """Names of all registered datasets (installed or not)."""
    return tuple(_LOADERS)


@functools.cache
def _load_raw(name: str):
    return _LOADERS[name]()


def available() -> tuple[str, ...]:
    """Names of the registered datasets whose files are present on this machine."""
    found = []
    for name in _LOADERS:
        try:
            _load_raw(name)
        except DatasetNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def load(name: str, image_size: int = 28) -> Dataset:
    """Loads dataset ``name`` resized to ``image_size x image_size`` (cached per process).

    Splits are fixed: Fashion-MNIST uses the last 10,000 training images as ``valid`` and the
    official test set as ``test`` (IDX directories likewise, see :func:`register_idx_directory`);
    ``digits`` uses a fixed permutation (1,200 / 300 / 297); ``synthetic`` is generated from
    fixed seeds (2,048 / 512 / 512). Images are stored as uint8 and normalised to zero mean and
    unit variance per batch.
    A name of the form ``"idx:/some/dir"`` loads that IDX directory directly.

    Args:
        name: one of :func:`names`, or ``"idx:<directory>"``.
        image_size: 8, 16 or 28.

    Raises:
        ValueError: unknown name or image size.
        DatasetNotFoundError: the dataset's files are missing (the message says how to install).

    Example:
        >>> from lopt.tasks import datasets
        >>> datasets.load("digits", image_size=8).info.input_shape
        (8, 8, 1)
    """
    image_size = check_image_size(image_size)
    if not isinstance(name, str):
        raise TypeError(f"load: name={name!r} must be a string, e.g. 'fashion_mnist'.")
    if name.startswith("idx:") and name not in _LOADERS:
        register_idx_directory(name, name[4:])
    if name not in _LOADERS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {names()} "
                         "(or 'idx:<directory>' for a directory of IDX files).")
    # One cache entry per (name, size) however the arguments were spelled, so every task of a
    # dataset shares the same device arrays (and can be stacked).
    return _load_resized(name, image_size)


@functools.cache
def _load_resized(name: str, image_size: int) -> Dataset:
    raw, num_classes = _load_raw(name)
    splits = {split: (resize_uint8(x, image_size), y) for split, (x, y) in raw.items()}
    return Dataset.from_numpy(name, splits, num_classes=num_classes)
