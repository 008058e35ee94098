"""A digest of some of lopt's own source files, for caches whose entries that code decides.

A cached number (a task's FLOP count, a structure's normaliser) stays valid only while the code
that computed it is unchanged. :func:`source_fingerprint` hashes the named files (paths and
contents) with JAX's version, so a cache can name its files by it: any change to that code, or a
JAX upgrade, starts new files instead of reading stale ones.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os

__all__ = ["source_fingerprint"]

_LOPT_ROOT = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def source_fingerprint(*patterns: str, exclude: tuple[str, ...] = (), jax_version: bool = True) -> str:
    """16 hex digits of SHA-256 over JAX's version and the lopt sources matching ``patterns``.

    Args:
        *patterns: globs relative to the ``lopt`` package folder (``**`` recurses), e.g.
            ``"tasks/**/*.py"``.
        exclude: files (paths relative to the package folder) the patterns match that do not
            decide the cached numbers, e.g. ``("tasks/catalogue.py",)``; each must exist.
        jax_version: include JAX's version (leave it out only for numbers that are checked against
            the installed JAX some other way, as the task costs shipped with lopt are by its tests).

    Returns:
        The digest; equal for equal code, different when a matched file changes, appears or goes.

    Raises:
        ValueError: if a pattern matches no file (a typo would otherwise fingerprint nothing).

    Example:
        >>> from lopt.source_fingerprint import source_fingerprint
        >>> len(source_fingerprint("flops.py"))
        16
        >>> source_fingerprint("flops.py") == source_fingerprint("flops.py", "tasks/**/*.py")
        False
        >>> source_fingerprint("tasks/*.py") == source_fingerprint("tasks/*.py", exclude=("tasks/catalogue.py",))
        False
    """
    import jax

    skipped = {os.path.join(_LOPT_ROOT, path) for path in exclude}
    missing = sorted(path for path in skipped if not os.path.isfile(path))
    if missing:
        raise ValueError(f"source_fingerprint: exclude names {missing}, which do not exist; give paths relative to "
                         f"{_LOPT_ROOT}.")
    digest = hashlib.sha256(jax.__version__.encode() if jax_version else b"")
    for pattern in patterns:
        paths = sorted(p for p in glob.glob(os.path.join(_LOPT_ROOT, pattern), recursive=True) if p not in skipped)
        if not paths:
            raise ValueError(f"source_fingerprint: {pattern!r} matches no file under {_LOPT_ROOT}; "
                             "give a glob relative to the lopt package folder.")
        for path in paths:
            digest.update(os.path.relpath(path, _LOPT_ROOT).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]
