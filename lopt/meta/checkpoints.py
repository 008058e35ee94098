"""A folder of numbered meta-training checkpoints: atomic saves, keep-last-N, safe restore.

Each checkpoint is one :mod:`lopt.checkpoint` file, ``ckpt_<step:08d>.safetensors``: the
arrays as safetensors tensors plus a JSON header holding the step, the caller's metadata and
a SHA-256 digest of the arrays. One file means one atomic write (temporary file, ``fsync``,
``os.replace``), so a half-written checkpoint is never visible under its final name. On
restore,

* truncation is detected by the safetensors offsets (the header says how many bytes each
  tensor has; a short file cannot satisfy them),
* any other damage to the arrays is detected by the digest, and
* a damaged header is detected by the JSON parser,

and an unusable newest checkpoint is skipped, with a warning naming the file and the problem,
in favour of the one before it.

PRNG keys: typed key leaves (``jax.random.key``) cannot be stored as arrays, so they are saved
as ``jax.random.key_data`` (``uint32``) with their implementation name recorded, and wrapped
back into typed keys on restore. Raw ``uint32`` keys (``jax.random.PRNGKey``) are ordinary
arrays.

Example:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> manager = CheckpointManager(tempfile.mkdtemp(), keep=2)
    >>> state = {"theta": {"w": jnp.ones((2, 2))}, "key": jax.random.key(0)}
    >>> for step in (10, 20, 30):
    ...     _ = manager.save(step, state, {"loss": 0.5})
    >>> manager.list()
    [20, 30]
    >>> step, restored, meta = manager.restore(like=state)
    >>> step, meta, restored["key"].dtype
    (30, {'loss': 0.5}, key<fry>)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt import checkpoint

__all__ = ["CheckpointManager"]

_KIND = "lopt.meta_checkpoint"
_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{8,})\.safetensors$")
_TEMP_PREFIX = ".ckpt_"  # lopt.checkpoint writes ".<final name>.<random>.tmp" next to the file


class _Unusable(Exception):
    """A checkpoint file that cannot be used (the message says why)."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(names: list[str], leaves: list[np.ndarray]) -> str:
    """SHA-256 over every leaf's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, arr in sorted(zip(names, leaves), key=lambda item: item[0]):
        arr = np.ascontiguousarray(arr)
        h.update(json.dumps([name, str(arr.dtype), list(arr.shape)]).encode("utf-8"))
        h.update(arr.tobytes())
    return h.hexdigest()


def _check_step(step: Any, what: str = "step") -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{what}={step!r} must be a non-negative integer.")
    return int(step)


class CheckpointManager:
    """Saves numbered checkpoints of a pytree into one folder and restores the newest usable one.

    Saving step ``s`` discards checkpoints with larger steps (with a warning): they belong to an
    abandoned trajectory, e.g. the corrupted checkpoint a resume skipped, and would otherwise
    be taken for the newest. Leftover temporary files of a save that crashed are deleted when
    the manager is created. One process should write to a folder at a time.

    Args:
        directory: the folder (created if missing).
        keep: how many of the newest checkpoints to keep (``None``: keep all).
        clock: seconds, for :meth:`should_save` (``time.monotonic``; replaceable in tests).

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> manager = CheckpointManager(tempfile.mkdtemp())
        >>> manager.latest_step() is None
        True
        >>> _ = manager.save(5, {"w": jnp.zeros(3)})
        >>> manager.restore()[0]
        5
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3, *,
                 clock: Callable[[], float] = time.monotonic):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"CheckpointManager: keep={keep!r} must be a positive integer or None "
                             "(keep every checkpoint).")
        self.directory = pathlib.Path(directory)
        self.keep = keep
        self._clock = clock
        self._last_save_time = clock()
        self._last_saved_step: int | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(f"{_TEMP_PREFIX}*.tmp"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep})"

    # --- listing -------------------------------------------------------------------------------

    def path(self, step: int) -> pathlib.Path:
        """The file of checkpoint ``step`` (whether or not it exists)."""
        return self.directory / f"ckpt_{_check_step(step):08d}.safetensors"

    def list(self) -> list[int]:
        """Steps of the checkpoint files present, oldest first (not checked for damage)."""
        steps = []
        for entry in self.directory.iterdir():
            match = _NAME.match(entry.name)
            if match and entry.is_file():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, or ``None`` if there is none.

        The newest file is not checked for damage here; :meth:`restore` may fall back to an
        older one.
        """
        steps = self.list()
        return steps[-1] if steps else None

    # --- saving --------------------------------------------------------------------------------

    def should_save(self, step: int, *, every_steps: int | None = None,
                    every_seconds: float | None = None) -> bool:
        """Whether ``step`` is due for a checkpoint.

        True when ``step`` is a multiple of ``every_steps``, or when at least ``every_seconds``
        have passed since the last :meth:`save` (or since the manager was created), unless
        ``step`` was the last step saved. With neither given it is always False.

        Example:
            >>> import tempfile
            >>> manager = CheckpointManager(tempfile.mkdtemp())
            >>> [s for s in range(1, 8) if manager.should_save(s, every_steps=3)]
            [3, 6]
        """
        step = _check_step(step)
        if every_steps is not None and (isinstance(every_steps, bool) or
                                        not isinstance(every_steps, int) or every_steps < 1):
            raise ValueError(f"should_save: every_steps={every_steps!r} must be a positive integer "
                             "or None.")
        if every_seconds is not None and (isinstance(every_seconds, bool) or
                                          not isinstance(every_seconds, (int, float)) or
                                          not every_seconds > 0):
            raise ValueError(f"should_save: every_seconds={every_seconds!r} must be a positive "
                             "number or None.")
        if step == self._last_saved_step:
            return False
        if every_steps is not None and step % every_steps == 0:
            return True
        return every_seconds is not None and self._clock() - self._last_save_time >= every_seconds

    def mark_saved(self, step: int) -> None:
        """Records a save point at ``step`` without writing a checkpoint.

        For callers that keep only part of their state at a save point (the trainer with
        ``trainer.full_checkpoints=false`` writes its warm start alone): :meth:`should_save`'s
        clock and last step restart here as if :meth:`save` had run.

        Example:
            >>> import tempfile
            >>> manager = CheckpointManager(tempfile.mkdtemp())
            >>> manager.mark_saved(3)
            >>> manager.should_save(3, every_steps=3), manager.list()
            (False, [])
        """
        self._last_saved_step = _check_step(step)
        self._last_save_time = self._clock()

    def save(self, step: int, tree: Any, metadata: dict[str, Any] | None = None) -> pathlib.Path:
        """Writes checkpoint ``step`` atomically, then prunes to the newest ``keep``.

        Args:
            step: the outer step (``>= 0``); an existing checkpoint of that step is replaced.
            tree: pytree of arrays (any dtype :mod:`lopt.checkpoint` supports, typed PRNG keys
                included); Python numbers are stored as arrays.
            metadata: JSON-serialisable dict returned by :meth:`restore`.

        Returns:
            The file written.

        Raises:
            ValueError: a bad step. TypeError: a non-array leaf or non-JSON metadata.
        """
        step = _check_step(step)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"save: metadata must be a dict, got {type(metadata).__name__}.")
        names = checkpoint.leaf_names(tree)
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        key_impls = {name: str(jax.random.key_impl(leaf))
                     for name, leaf in zip(names, leaves) if _is_key(leaf)}
        leaves = [jax.random.key_data(leaf) if _is_key(leaf) else leaf for leaf in leaves]
        leaves = [np.asarray(leaf) for leaf in jax.device_get(leaves)]
        document = {"kind": _KIND, "version": _VERSION, "step": step,
                    "sha256": _digest(names, leaves), "prng_keys": key_impls,
                    "metadata": {} if metadata is None else metadata}
        path = self.path(step)
        checkpoint.save_tree(path, jax.tree_util.tree_unflatten(treedef, leaves), document)
        self._last_save_time = self._clock()
        self._last_saved_step = step
        self._prune(step)
        return path

    def _prune(self, saved: int) -> None:
        steps = self.list()
        newer = [s for s in steps if s > saved]
        if newer:
            warnings.warn(f"CheckpointManager: saving step {saved} discards the newer checkpoints "
                          f"{[str(self.path(s)) for s in newer]} (an abandoned trajectory).",
                          RuntimeWarning, stacklevel=3)
        older = [s for s in steps if s <= saved]
        stale = older[:-self.keep] if self.keep is not None else []
        for s in newer + stale:
            self.path(s).unlink(missing_ok=True)

    # --- restoring -----------------------------------------------------------------------------

    def restore(self, like: Any = None, *, step: int | None = None) -> tuple[int, Any, dict[str, Any]]:
        """Loads the newest usable checkpoint (or checkpoint ``step``).

        Args:
            like: template pytree (arrays or ``jax.ShapeDtypeStruct``; typed PRNG keys allowed);
                the result has exactly its structure, and shapes and dtypes are checked. Without
                it the tree is rebuilt as nested dicts and lists.
            step: load exactly this step; no fallback.

        Returns:
            ``(step, tree, metadata)``.

        Raises:
            FileNotFoundError: no checkpoint in the folder (or none of that ``step``).
            ValueError: every checkpoint is damaged (or checkpoint ``step`` is), listing each
                file and its problem; or the checkpoint does not match ``like`` (names the leaf).
        """
        if step is not None:
            path = self.path(step)
            if not path.is_file():
                raise FileNotFoundError(f"no checkpoint of step {step} in {str(self.directory)!r} "
                                        f"(present: {self.list()}).")
            try:
                return self._load(path, step, like)
            except _Unusable as err:
                raise ValueError(f"checkpoint {str(path)!r} is unusable: {err}.") from None
        steps = self.list()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {str(self.directory)!r}.")
        problems = []
        for index in range(len(steps) - 1, -1, -1):
            path = self.path(steps[index])
            try:
                return self._load(path, steps[index], like)
            except _Unusable as err:
                problems.append(f"{str(path)!r}: {err}")
                if index > 0:
                    warnings.warn(f"CheckpointManager: checkpoint {str(path)!r} is unusable ({err}); "
                                  f"falling back to {str(self.path(steps[index - 1]))!r}.",
                                  RuntimeWarning, stacklevel=2)
        raise ValueError(f"no usable checkpoint in {str(self.directory)!r}: " + "; ".join(problems))

    def _load(self, path: pathlib.Path, step: int, like: Any) -> tuple[int, Any, dict[str, Any]]:
        """Loads one file; raises _Unusable for damage, ValueError for a template mismatch."""
        file_like = None if like is None else jax.tree.map(
            lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x, like)
        try:
            tree, document = checkpoint.load_tree(path, like=file_like)
        except Exception as err:  # damage can surface as any parsing error
            if like is not None and self._readable(path):
                raise  # the file is fine; it does not match the template (ValueError names the leaf)
            raise _Unusable(str(err) or type(err).__name__) from None
        if not isinstance(document, dict) or document.get("kind") != _KIND:
            raise _Unusable(f"it is not a {_KIND} file (no checkpoint record in its metadata)")
        if document.get("version", 0) > _VERSION:
            raise _Unusable(f"its version {document.get('version')} is newer than this lopt reads "
                            f"({_VERSION}); upgrade lopt")
        if document.get("step") != step:
            raise _Unusable(f"it records step {document.get('step')!r}, but its name says {step}")
        names = checkpoint.leaf_names(tree)
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        arrays = [np.asarray(x) for x in jax.device_get(leaves)]
        if _digest(names, arrays) != document.get("sha256"):
            raise _Unusable("its arrays do not match the recorded SHA-256 digest (the file is damaged)")
        key_impls = document.get("prng_keys") or {}
        if like is not None:
            like_keys = {n for n, x in zip(names, jax.tree_util.tree_leaves(like)) if _is_key(x)}
            missing = sorted(like_keys - set(key_impls))
            if missing:
                raise ValueError(f"checkpoint {str(path)!r} does not match the template: leaf "
                                 f"{missing[0]!r} is a PRNG key in the template but raw data in the file.")
            key_impls = {n: impl for n, impl in key_impls.items() if n in like_keys}
        leaves = [jax.random.wrap_key_data(x, impl=key_impls[n]) if n in key_impls else x
                  for n, x in zip(names, leaves)]
        return step, jax.tree_util.tree_unflatten(treedef, leaves), document.get("metadata", {})

    @staticmethod
    def _readable(path: pathlib.Path) -> bool:
        try:
            checkpoint.read_metadata(path)
        except Exception:  # noqa: BLE001 - any failure to parse means "not readable"
            return False
        return True
