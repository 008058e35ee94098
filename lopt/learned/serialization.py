"""Save and load theta with its architecture name, config and format version.

A theta file is a :mod:`lopt.checkpoint` file (safetensors; one tensor per theta leaf,
named by its path, e.g. ``"mlp/w0"``) whose JSON metadata records::

    {"kind": "lopt.theta", "theta_format_version": 1,
     "architecture": "mlp", "config": {...}, "extra": {...}}

No pickle: loading a file from a stranger cannot run code. Every file carries a SHA-256
digest of its tensors and metadata (see :mod:`lopt.checkpoint`), verified by
:func:`load_theta`: a damaged file raises :class:`lopt.checkpoint.DigestMismatchError` (a
``ValueError``) naming the file. Files written before digests existed load with a
``UserWarning`` saying they cannot be checked; re-save them with :func:`save_theta` to add one.

Example:
    >>> import tempfile, os, jax
    >>> import lopt.learned
    >>> lopt_ = lopt.learned.get("mlp", hidden_size=8)
    >>> theta = lopt_.init(jax.random.key(0))
    >>> path = os.path.join(tempfile.mkdtemp(), "theta.safetensors")
    >>> _ = lopt.learned.save_theta(path, lopt_, theta)
    >>> theta2, lopt2 = lopt.learned.load_theta(path)
    >>> lopt2 == lopt_
    True
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any

from lopt import checkpoint
from lopt.learned import registry
from lopt.learned.base import LearnedOptimizer

__all__ = ["THETA_FORMAT_VERSION", "load_theta", "save_theta", "stored_config"]

#: Version of the theta metadata layout.
THETA_FORMAT_VERSION = 1
_KIND = "lopt.theta"


def save_theta(
    path: str | os.PathLike,
    lopt: LearnedOptimizer,
    theta: Any,
    *,
    extra: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Writes ``theta`` and ``lopt``'s name and config to ``path``, atomically.

    Args:
        path: destination (``.safetensors`` by convention).
        lopt: the learned optimizer ``theta`` belongs to.
        theta: meta-parameters, checked against ``lopt`` before writing.
        extra: optional JSON-serialisable metadata (training step, notes...).

    Returns:
        The path written.

    Raises:
        ValueError: ``theta`` does not match ``lopt`` (names the leaf).
    """
    if not isinstance(lopt, LearnedOptimizer):
        raise TypeError(
            f"save_theta(path, lopt, theta) takes a LearnedOptimizer as `lopt`, got "
            f"{type(lopt).__name__}."
        )
    lopt.check_theta(theta)
    meta = {
        "kind": _KIND,
        "theta_format_version": THETA_FORMAT_VERSION,
        "architecture": lopt.name,
        "config": lopt.config(),
        "extra": {} if extra is None else extra,
    }
    return checkpoint.save_tree(path, theta, meta)


def _describe(name: str, config: dict[str, Any]) -> str:
    return f"`{name}` with config {config}"


def stored_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A config read from a file, completed with the defaults of fields added since it was written.

    New architecture fields default to the behaviour files had before them, so a file's config
    and a freshly built optimizer's compare equal when they describe the same update.

    Example:
        >>> stored_config("nominal", {"lr": 1e-3})["step_size"]
        'adam'
    """
    return registry.get(name, **config).config()


def load_theta(
    path: str | os.PathLike, lopt: LearnedOptimizer | None = None
) -> tuple[Any, LearnedOptimizer]:
    """Reads a theta file written by :func:`save_theta`.

    Args:
        path: file to read.
        lopt: optional learned optimizer the file must belong to. Without it, the
            architecture is rebuilt from the file's name and config via the registry.

    Returns:
        ``(theta, lopt)``.

    Raises:
        ValueError: the file is damaged (its SHA-256 digest does not match:
            :class:`lopt.checkpoint.DigestMismatchError`), is not a theta file, is from a newer
            format, or does not match ``lopt``: a structural difference names the first leaf that
            differs; otherwise the first config field that differs is named.
    """
    meta = checkpoint.read_metadata(path)  # verifies the digest
    if checkpoint.stored_digest(path) is None:
        warnings.warn(
            f"{str(path)!r} has no SHA-256 digest (written by an older lopt), so damage to it cannot "
            "be detected; re-save it with lopt.learned.save_theta(path, *reversed(load_theta(path))) "
            "to add one.", UserWarning, stacklevel=2)
    if not isinstance(meta, dict) or meta.get("kind") != _KIND:
        raise ValueError(
            f"{str(path)!r} is a checkpoint but not a theta file (kind={meta.get('kind')!r})."
        )
    if meta.get("theta_format_version", 0) > THETA_FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has theta format version {meta['theta_format_version']}, newer "
            f"than this lopt understands ({THETA_FORMAT_VERSION}); upgrade lopt."
        )
    file_name, file_config = meta["architecture"], meta["config"]
    if lopt is None:
        lopt = registry.get(file_name, **file_config)
    try:
        theta, _ = checkpoint.load_tree(path, like=lopt.theta_spec())
    except ValueError as e:
        raise ValueError(
            f"{str(path)!r} holds theta of {_describe(file_name, file_config)}, which does "
            f"not fit {_describe(lopt.name, lopt.config())}: {e}"
        ) from None
    if file_name != lopt.name:
        raise ValueError(
            f"{str(path)!r} holds theta of architecture {file_name!r}, not {lopt.name!r}; "
            "call `load_theta(path)` without `lopt` to get the file's architecture."
        )
    mine = lopt.config()
    # fields added after the file was written take their defaults (which keep the old behaviour)
    file_config = stored_config(file_name, file_config)
    for key in sorted(set(mine) | set(file_config)):
        if mine.get(key) != file_config.get(key):
            raise ValueError(
                f"{str(path)!r} holds theta of `{file_name}` with {key}="
                f"{file_config.get(key)!r}, but the given optimizer has {key}={mine.get(key)!r}; "
                "call `load_theta(path)` without `lopt` to use the file's config."
            )
    return theta, lopt
