"""Array-only pytree checkpoints: one safetensors file, JSON inside, no pickle.

A checkpoint is a single `safetensors <https://github.com/huggingface/safetensors>`_
file. Each leaf of the pytree is one tensor, named by its tree path (``"mlp/w0"``,
``"opt_state/0/mu/layer1/w"``); the file's ``__metadata__`` header holds one JSON
document with the format version, the ordered list of leaf paths (so nested dicts and
lists can be rebuilt without a template) and the caller's own metadata. Nothing in the
file is executable, any safetensors reader (including PyTorch's) can read the tensors,
and ``bfloat16`` leaves are stored natively as ``BF16``.

Writes are atomic (temporary file in the same folder, ``fsync``, ``os.replace``), so a
reader never sees a half-written file and a crash mid-write leaves the previous file in
place. Loads against a template (``like=``) check structure, shapes and dtypes and name
the first leaf that does not match.

Every file carries a SHA-256 digest (``"sha256"`` in its JSON document) over the document
itself (leaf names, paths, the caller's metadata) and, for every tensor in order, its name,
dtype, shape and little-endian bytes. Every read verifies it: a flipped byte anywhere in the
tensors or the metadata raises :class:`DigestMismatchError` naming the file. Files written
before digests existed (no ``"sha256"``) still load; :func:`stored_digest` returns ``None``
for them, so a caller can warn (``lopt.learned.load_theta`` does).

Example:
    >>> import tempfile, os
    >>> import jax.numpy as jnp
    >>> from lopt import checkpoint
    >>> tree = {"w": jnp.ones((2, 3)), "b": [jnp.zeros(3), jnp.asarray(1.5)]}
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    >>> _ = checkpoint.save_tree(path, tree, {"step": 10})
    >>> restored, meta = checkpoint.load_tree(path, like=tree)
    >>> meta
    {'step': 10}
    >>> restored["b"][1]
    Array(1.5, dtype=float32)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import sys
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "DigestMismatchError",
    "atomic_write",
    "check_tree",
    "leaf_names",
    "load_tree",
    "read_metadata",
    "save_tree",
    "stored_digest",
    "tree_mismatch",
]

#: Version of the on-disk layout written by :func:`save_tree`.
FORMAT_VERSION = 1

_FORMAT_NAME = "lopt.tree"
_META_KEY = "lopt"
_ROOT_NAME = "root"
_MAX_HEADER_BYTES = 100 * 1024 * 1024

PathLike = str | os.PathLike

# safetensors dtype codes <-> numpy dtypes.
_DTYPE_TO_CODE = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
_CODE_TO_DTYPE = {code: dtype for dtype, code in _DTYPE_TO_CODE.items()}


class DigestMismatchError(ValueError):
    """A file's tensors or metadata do not match the SHA-256 digest recorded when it was saved."""


def _digest(doc: dict[str, Any], tensors: list[tuple[str, str, list[int], bytes | memoryview]]) -> str:
    """SHA-256 of a file's JSON document (without its digest) and of every tensor, in order."""
    h = hashlib.sha256()
    body = {k: v for k, v in doc.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name, code, shape, data in tensors:
        h.update(json.dumps([name, code, list(shape)]).encode("utf-8"))
        h.update(data)
    return h.hexdigest()


def _key_entry(entry: Any) -> tuple[str, str]:
    """Returns ``(kind, key)`` for one tree-path entry."""
    if isinstance(entry, jax.tree_util.DictKey):
        return "dict", str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return "seq", str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return "attr", entry.name
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return "index", str(entry.key)
    return "other", str(entry)


def _path_name(path: tuple[Any, ...]) -> str:
    if not path:
        return _ROOT_NAME
    return "/".join(_key_entry(e)[1] for e in path)


def leaf_names(tree: Any) -> list[str]:
    """Names of the leaves of ``tree``, in flattening order, as used in checkpoints.

    A leaf's name joins its tree-path keys with ``/``: dict keys, sequence indices and
    attribute names (``{"mlp": {"w0": x}}`` -> ``"mlp/w0"``; a bare array is ``"root"``).

    Args:
        tree: any pytree.

    Returns:
        One name per leaf.

    Example:
        >>> leaf_names({"a": [1.0, 2.0], "b": {"c": 3.0}})
        ['a/0', 'a/1', 'b/c']
    """
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [_path_name(p) for p, _ in leaves_with_path]


def _spec(x: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array, ShapeDtypeStruct, tracer or Python scalar."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(x.shape), np.dtype(x.dtype)
    arr = jnp.asarray(x)
    return tuple(arr.shape), np.dtype(arr.dtype)


def tree_mismatch(tree: Any, like: Any, *, check_dtype: bool = True) -> str | None:
    """Describes the first difference in structure, shape or dtype between two pytrees.

    Leaves are compared by name (see :func:`leaf_names`) in ``like``'s order, so the
    message points at the exact leaf to fix.

    Args:
        tree: the pytree to check (arrays, tracers or ``jax.ShapeDtypeStruct``).
        like: the reference pytree.
        check_dtype: also require equal dtypes.

    Returns:
        ``None`` when the trees match, otherwise a one-line description of the first
        mismatch that names the leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> tree_mismatch({"w": jnp.zeros((2, 3))}, {"w": jnp.zeros((3, 3))})
        "leaf 'w' has shape (2, 3), expected (3, 3)"
    """
    got = dict(zip(leaf_names(tree), jax.tree_util.tree_leaves(tree)))
    want_names = leaf_names(like)
    want = dict(zip(want_names, jax.tree_util.tree_leaves(like)))
    for name in want_names:
        if name not in got:
            return f"leaf {name!r} is missing (present: {_short_list(list(got))})"
        got_shape, got_dtype = _spec(got[name])
        want_shape, want_dtype = _spec(want[name])
        if got_shape != want_shape:
            return f"leaf {name!r} has shape {got_shape}, expected {want_shape}"
        if check_dtype and got_dtype != want_dtype:
            return f"leaf {name!r} has dtype {got_dtype}, expected {want_dtype}"
    for name in got:
        if name not in want:
            return f"leaf {name!r} is unexpected (expected only: {_short_list(want_names)})"
    got_def = jax.tree_util.tree_structure(tree)
    want_def = jax.tree_util.tree_structure(like)
    if got_def != want_def:
        return f"tree structure differs: got {got_def}, expected {want_def}"
    return None


def _short_list(names: list[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return repr(names)
    return repr(names[:limit])[:-1] + f", ... ({len(names)} in all)]"


def check_tree(tree: Any, like: Any, *, what: str = "tree", check_dtype: bool = True) -> None:
    """Raises ``ValueError`` naming the first leaf where ``tree`` and ``like`` differ.

    Args:
        tree: the pytree to check.
        like: the reference pytree (arrays or ``jax.ShapeDtypeStruct``).
        what: what ``tree`` is, for the message (``"theta"``, ``"checkpoint"``...).
        check_dtype: also require equal dtypes.

    Raises:
        ValueError: if structure, a shape or (optionally) a dtype differs.

    Example:
        >>> import jax.numpy as jnp
        >>> check_tree({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)})
    """
    problem = tree_mismatch(tree, like, check_dtype=check_dtype)
    if problem is not None:
        raise ValueError(f"{what} does not match the expected structure: {problem}.")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, jax.ShapeDtypeStruct):
        raise TypeError(f"leaf {name!r} is a ShapeDtypeStruct; save concrete arrays.")
    try:
        arr = np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else jnp.asarray(x))
    except Exception as e:
        raise TypeError(
            f"leaf {name!r} of type {type(x).__name__} is not an array; "
            "checkpoints hold only arrays and numbers."
        ) from e
    if arr.dtype not in _DTYPE_TO_CODE:
        raise TypeError(
            f"leaf {name!r} has dtype {arr.dtype}, which checkpoints do not support; "
            f"cast it to one of {sorted(str(d) for d in _DTYPE_TO_CODE)}."
        )
    return np.array(arr, order="C", copy=True)


def _encode(arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> bytes:
    """Serialises tensors and the JSON document (to which it adds the ``"sha256"`` digest)."""
    tensors: dict[str, Any] = {}
    offset = 0
    chunks = []
    for name, arr in arrays.items():
        data = arr.tobytes() if sys.byteorder == "little" else arr.byteswap().tobytes()
        tensors[name] = {
            "dtype": _DTYPE_TO_CODE[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        chunks.append(data)
    try:
        doc = {**doc, "sha256": _digest(doc, [(name, info["dtype"], info["shape"], data)
                                            for (name, info), data in zip(tensors.items(), chunks)])}
        meta_json = json.dumps(doc)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serialisable: {e}.") from e
    header = {"__metadata__": {_META_KEY: meta_json}, **tensors}
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def atomic_write(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A reader sees either the old file or the new one, never a partial write; the folder is
    created if needed.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "notes.txt")
        >>> atomic_write(p, b"hello")
        >>> import pathlib
        >>> pathlib.Path(p).read_bytes()
        b'hello'
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_tree(path: PathLike, tree: Any, metadata: dict[str, Any] | None = None) -> pathlib.Path:
    """Saves a pytree of arrays to one safetensors file, atomically.

    Args:
        path: destination file; its folder is created if needed. An existing file is
            replaced atomically.
        tree: pytree whose leaves are arrays (JAX or NumPy) or Python numbers; dict keys,
            sequence indices and attribute names become tensor names (``"a/0/w"``).
        metadata: JSON-serialisable dict stored alongside (architecture, config, step...).

    Returns:
        The path written, as a ``pathlib.Path``.

    Raises:
        TypeError: a leaf is not an array or has an unsupported dtype, or ``metadata`` is
            not JSON-serialisable.
        ValueError: two leaves map to the same name.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> save_tree(p, {"x": jnp.arange(3.0)}, {"note": "hi"}).name
        't.safetensors'
    """
    path = pathlib.Path(path)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays: dict[str, np.ndarray] = {}
    paths = []
    for p, leaf in leaves_with_path:
        name = _path_name(p)
        if name in arrays or name == "__metadata__":
            raise ValueError(
                f"two leaves share the checkpoint name {name!r} (keys containing '/' collide "
                "with nested keys); rename the keys."
            )
        arrays[name] = _to_numpy(leaf, name)
        paths.append([list(_key_entry(e)) for e in p])
    doc = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "leaves": list(arrays),
        "paths": paths,
        "treedef": str(treedef),
        "metadata": metadata,
    }
    atomic_write(path, _encode(arrays, doc))
    return path


def _parse_header(head: bytes, size: int, path: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """``(tensor header, JSON document, header length)`` from the first bytes of a file of ``size`` bytes."""
    bad = f"{str(path)!r} is not a valid lopt checkpoint"
    if size < 8 or len(head) < 8:
        raise ValueError(f"{bad}: file is {size} bytes long.")
    (n,) = struct.unpack("<Q", head[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > size:
        raise ValueError(f"{bad}: header length {n} is out of range.")
    try:
        header = json.loads(bytes(head[8 : 8 + n]).decode("utf-8"))
        doc = json.loads(header.pop("__metadata__")[_META_KEY])
        if not isinstance(doc, dict):
            raise TypeError(f"its document is a {type(doc).__name__}, not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{bad}: cannot parse its header ({e}).") from e
    if doc.get("format") != _FORMAT_NAME:
        raise ValueError(f"{bad}: format is {doc.get('format')!r}, expected {_FORMAT_NAME!r}.")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format version {doc.get('format_version')}, newer than this "
            f"lopt understands ({FORMAT_VERSION}); upgrade lopt to read it."
        )
    return header, doc, n


def stored_digest(path: PathLike) -> str | None:
    """The SHA-256 digest recorded in a file's header (``None`` for files written before digests).

    Reads only the header; :func:`load_tree` and :func:`read_metadata` verify the digest.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> _ = save_tree(p, {"x": jnp.zeros(2)})
        >>> len(stored_digest(p))
        64
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            head += f.read(min(n, _MAX_HEADER_BYTES))
    return _parse_header(head, size, path)[1].get("sha256")


def _read(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}.")
    raw = path.read_bytes()
    bad = f"{str(path)!r} is not a valid lopt checkpoint"
    header, doc, n = _parse_header(raw, len(raw), path)
    data = memoryview(raw)[8 + n :]
    arrays = {}
    tensors = []
    for name in doc["leaves"]:
        if name not in header:
            raise ValueError(f"{bad}: tensor {name!r} listed in metadata is absent.")
        info = header[name]
        if info.get("dtype") not in _CODE_TO_DTYPE:
            raise ValueError(f"{bad}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}.")
        dtype = _CODE_TO_DTYPE[info["dtype"]]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        if (
            not 0 <= begin <= end <= len(data)
            or end - begin != int(np.prod(shape)) * dtype.itemsize
        ):
            raise ValueError(f"{bad}: tensor {name!r} has inconsistent data offsets.")
        tensors.append((name, info["dtype"], info["shape"], data[begin:end]))
        arr = np.frombuffer(data[begin:end], dtype=dtype)
        if sys.byteorder != "little":
            arr = arr.byteswap()
        arrays[name] = arr.reshape(shape).copy()
    recorded = doc.get("sha256")
    if recorded is not None and _digest(doc, tensors) != recorded:
        raise DigestMismatchError(
            f"{str(path)!r} is damaged: its contents do not match the SHA-256 digest recorded when "
            "it was saved (a changed byte in its tensors or metadata). Do not use it; restore the "
            "file from its source (re-download it, or re-save it from a checkpoint of its run)."
        )
    return arrays, doc


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Returns the metadata dict stored by :func:`save_tree`, without building the tree.

    Args:
        path: checkpoint file.

    Returns:
        The ``metadata`` dict given to :func:`save_tree`.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> _ = save_tree(p, {"x": jnp.zeros(2)}, {"step": 3})
        >>> read_metadata(p)
        {'step': 3}
    """
    return _read(path)[1]["metadata"]


def _rebuild(names: list[str], paths: list[list[list[str]]], arrays: dict[str, np.ndarray]):
    """Rebuilds nested dicts/lists from recorded key paths (no template)."""
    if not names:
        return {}
    if len(names) == 1 and not paths[0]:
        return jnp.asarray(arrays[names[0]])
    root: dict[str, Any] = {}
    for name, path in zip(names, paths):
        node = root
        for kind, key in path[:-1]:
            node = node.setdefault((kind, key), {})
        node[tuple(path[-1])] = jnp.asarray(arrays[name])

    def finish(node):
        if not isinstance(node, dict):
            return node
        kinds = {k[0] for k in node}
        if kinds == {"seq"}:
            return [finish(node[k]) for k in sorted(node, key=lambda k: int(k[1]))]
        return {k[1]: finish(v) for k, v in node.items()}

    return finish(root)


def load_tree(path: PathLike, like: Any = None) -> tuple[Any, dict[str, Any]]:
    """Loads a pytree saved by :func:`save_tree`.

    Args:
        path: checkpoint file.
        like: optional template pytree (arrays or ``jax.ShapeDtypeStruct``) with the
            expected structure, shapes and dtypes; the result has exactly its structure
            (named tuples, dataclasses and all). Without it, the tree is rebuilt from nested
            dicts and lists.

    Returns:
        ``(tree, metadata)``: the tree of ``jax.Array`` leaves and the metadata dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a valid checkpoint, or it does not match ``like``; the
            message names the first leaf that differs.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> _ = save_tree(p, {"w": jnp.zeros((2, 2))})
        >>> tree, meta = load_tree(p)
        >>> tree["w"].shape, meta
        ((2, 2), {})
    """
    arrays, doc = _read(path)
    names = list(doc["leaves"])
    if like is None:
        return _rebuild(names, doc["paths"], arrays), doc["metadata"]
    file_specs = {n: jax.ShapeDtypeStruct(a.shape, a.dtype) for n, a in arrays.items()}
    like_names = leaf_names(like)
    like_leaves = jax.tree_util.tree_leaves(like)
    for name, leaf in zip(like_names, like_leaves):
        if name not in file_specs:
            raise ValueError(
                f"checkpoint {str(path)!r} does not match the template: leaf {name!r} is "
                f"missing from the file (file has: {_short_list(names)})."
            )
        got_shape, got_dtype = _spec(file_specs[name])
        want_shape, want_dtype = _spec(leaf)
        if got_shape != want_shape or got_dtype != want_dtype:
            raise ValueError(
                f"checkpoint {str(path)!r} does not match the template: leaf {name!r} is "
                f"{got_dtype}{list(got_shape)} in the file, expected {want_dtype}{list(want_shape)}."
            )
    extra = [n for n in names if n not in set(like_names)]
    if extra:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the template: leaf {extra[0]!r} is in "
            f"the file but not in the template (template has: {_short_list(like_names)})."
        )
    treedef = jax.tree_util.tree_structure(like)
    tree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[n]) for n in like_names])
    return tree, doc["metadata"]
