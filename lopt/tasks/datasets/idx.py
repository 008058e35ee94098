"""Reader for the IDX file format of MNIST, Fashion-MNIST, KMNIST and friends."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lopt.tasks.datasets.compressed import find_compressed, read_compressed

__all__ = ["find_idx_file", "read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzip- or xz-compressed) into a numpy array.

    Args:
        path: an ``*-idx?-ubyte`` file, or the same with ``.gz`` or ``.xz``.

    Returns:
        The array with the shape stored in the file's header.

    Raises:
        ValueError: if the file is not a valid IDX file (or not valid gzip/xz data).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(path)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = read_compressed(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: the header declares {ndim} dimensions ({header} bytes) but the file holds "
                         f"only {len(raw)} bytes; the file is truncated or corrupted.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupted."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(directory: str | os.PathLike, stem: str) -> Path:
    """Finds ``stem``, ``stem.gz`` or ``stem.xz`` in ``directory`` (also with ``.`` instead of ``-`` before idx).

    Raises:
        FileNotFoundError: naming the directory and the files it expected.
    """
    found = find_compressed(directory, [stem, stem.replace("-idx", ".idx")])
    if found is None:
        raise FileNotFoundError(f"No {stem}[.gz|.xz] in {directory}; an IDX dataset directory holds "
                                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
                                "and t10k-labels-idx1-ubyte (optionally gzip- or xz-compressed).")
    return found
