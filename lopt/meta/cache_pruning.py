"""Which of the set-up cache's files the current code can still use, and removing the rest.

A mixture run's set-up keeps three kinds of files in one folder
(:func:`lopt.meta.normalizer.default_cache_dir`: ``$LOPT_CACHE_DIR/normalizers`` or
``~/.cache/lopt/normalizers``), each keyed by a fingerprint of the lopt sources that decide it:

* ``program-<name>-<key>.json`` and the ``.stablehlo`` module it names
  (:class:`~lopt.meta.program_cache.ProgramCache`): every source file and JAX's version;
* ``structure-<family>-<key>.json`` (:class:`~lopt.meta.structure_fit_cache.StructureFitCache`):
  the task, inner-loop, optimizer and fitting sources;
* ``prewarm-<key>.json`` (:mod:`lopt.meta.prewarm`): every source file.

A file written by other code is never read again (its key cannot match), so each change to lopt
leaves a few MB behind (the 16 programs of the ``taskset`` preset are ~10 MB). :func:`scan`
sorts the folder's files into those the current code and JAX can use and those they cannot
(another code fingerprint or JAX version, an unreadable record, a module no record names);
:func:`prune` removes the latter. Files of another backend (a GPU host's programs carried to a
CPU machine) are kept: they are current where they were made. Other files in the folder (the
per-config normalisers of :class:`~lopt.meta.normalizer.NormalizerCache`, a file being written)
are not touched. ``lopt cache`` lists, ``lopt cache --prune`` removes. Prune while no run is
setting up: a module written a moment before its record looks unnamed (the run would then export
that program again, with a warning).

Example:
    >>> import tempfile
    >>> from lopt.meta.cache_pruning import scan
    >>> scan(tempfile.mkdtemp())
    []
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax

from lopt.meta.normalizer import default_cache_dir

__all__ = ["CacheEntry", "prune", "scan"]


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cache entry: its files, their size and whether the current code can use it.

    Attributes:
        kind: ``"program"``, ``"fit"`` or ``"prewarm"``.
        files: the entry's files (a program's record and its module).
        bytes: their total size.
        stale: whether the current code and JAX can no longer read it.
        reason: why it is stale (``""`` when it is not).
    """

    kind: str
    files: tuple[pathlib.Path, ...]
    bytes: int
    stale: bool
    reason: str = ""


def _read(path: pathlib.Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _size(paths: list[pathlib.Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def _entry(kind: str, files: list[pathlib.Path], reason: str) -> CacheEntry:
    return CacheEntry(kind, tuple(files), _size(files), bool(reason), reason)


def _program_entries(folder: pathlib.Path, code: str) -> list[CacheEntry]:
    from lopt.meta.program_cache import _FORMAT_VERSION

    entries, named = [], set()
    for record_path in sorted(folder.glob("program-*.json")):
        record = _read(record_path)
        files = [record_path]
        if record is None:
            entries.append(_entry("program", files, "unreadable record"))
            continue
        module = record.get("module_file")
        if isinstance(module, str):
            named.add(pathlib.Path(module).name)
            files.append(folder / pathlib.Path(module).name)
        if record.get("format_version") != _FORMAT_VERSION:
            reason = "another record format"
        elif record.get("jax") != jax.__version__:
            reason = f"JAX {record.get('jax')}"
        elif record.get("code") != code:
            reason = "other lopt sources"
        else:
            reason = ""
        entries.append(_entry("program", files, reason))
    for module in sorted(folder.glob("program-*.stablehlo")):
        if module.name not in named:
            entries.append(_entry("program", [module], "no record names this module"))
    return entries


def _keyed_entries(folder: pathlib.Path, kind: str, pattern: str, code: str) -> list[CacheEntry]:
    entries = []
    for path in sorted(folder.glob(pattern)):
        record = _read(path)
        if record is None:
            reason = "unreadable"
        elif record.get("code") != code:
            reason = "other lopt sources" if "code" in record else "written by an older lopt"
        else:
            reason = ""
        entries.append(_entry(kind, [path], reason))
    return entries


def scan(directory: str | os.PathLike | None = None) -> list[CacheEntry]:
    """The cache folder's program, fit and set-up-worker entries, each marked stale or current.

    Args:
        directory: the folder (default :func:`lopt.meta.normalizer.default_cache_dir`).

    Returns:
        One :class:`CacheEntry` per entry (programs, then fits, then set-up records); ``[]`` for
        a folder that does not exist.
    """
    from lopt.meta import program_cache, structure_fit_cache

    folder = pathlib.Path(default_cache_dir() if directory is None else directory)
    if not folder.is_dir():
        return []
    code = program_cache.code_fingerprint()
    return (_program_entries(folder, code)
            + _keyed_entries(folder, "fit", "structure-*.json", structure_fit_cache.code_fingerprint())
            + _keyed_entries(folder, "prewarm", "prewarm-*.json", code))


def prune(entries: list[CacheEntry]) -> tuple[int, int]:
    """Removes the files of the stale entries among ``entries``; returns ``(files, bytes)`` removed.

    A file already gone (another process pruned it) is skipped.
    """
    removed = freed = 0
    for entry in entries:
        if not entry.stale:
            continue
        for path in entry.files:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            removed, freed = removed + 1, freed + size
    return removed, freed
