"""Output directories that are never clobbered, and a lock that keeps two processes out of one.

Commands that write into a directory (``lopt train``, ``lopt run``) call :func:`claim` first:
a directory that already holds outputs of the same kind is refused with an
:class:`OutputExistsError` that names the way forward, unless the caller asked to overwrite,
and even then nothing is deleted: the old outputs are moved into a timestamped sub-folder
(``previous-YYYYmmdd-HHMMSS/``) by :func:`move_aside`.

:class:`DirectoryLock` holds an exclusive ``fcntl.flock`` on ``<dir>/lopt.lock`` (which records
the holder's PID, host and start time) for as long as a run writes there. The operating system
drops the lock when its process dies, however it dies (``SIGKILL`` included), so the lock of a
dead process is never in the way: the next run takes it over. A second live process gets a
:class:`DirectoryInUseError` naming the PID that holds it. Inside one process the lock is
re-entrant (a command and the trainer it calls may both take it).

Example:
    >>> import os, tempfile
    >>> out = tempfile.mkdtemp()
    >>> with DirectoryLock(out):
    ...     claim(out, ["run.json"], overwrite=False, what="a run") is None
    True
    >>> open(os.path.join(out, "run.json"), "w").close()
    >>> claim(out, ["run.json"], overwrite=False, what="a run", hint="pass --overwrite.")
    Traceback (most recent call last):
    ...
    lopt.output_dir.OutputExistsError: ... already holds a run (run.json); pass --overwrite.
    >>> backup = claim(out, ["run.json"], overwrite=True, what="a run")
    >>> sorted(os.listdir(backup))
    ['run.json']
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time
from collections.abc import Iterable
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "DirectoryInUseError", "DirectoryLock", "OutputExistsError", "claim",
           "existing_outputs", "move_aside"]

LOCK_NAME = "lopt.lock"
BACKUP_PREFIX = "previous"

_HELD: dict[str, list] = {}  # resolved lock path -> [open file, depth]: the locks this process holds


class OutputExistsError(ValueError):
    """The output directory already holds outputs that a new run would overwrite."""


class DirectoryInUseError(ValueError):
    """Another live process holds the directory's lock."""


def existing_outputs(directory: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """The entries of ``names`` present in ``directory`` (files, or folders that are not empty).

    Example:
        >>> import tempfile
        >>> existing_outputs(tempfile.mkdtemp(), ["config.json", "checkpoints"])
        []
    """
    directory = pathlib.Path(directory)
    present = []
    for name in names:
        path = directory / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            present.append(name)
    return present


def move_aside(directory: str | os.PathLike, names: Iterable[str], *, prefix: str = BACKUP_PREFIX
               ) -> pathlib.Path | None:
    """Moves the present ``names`` of ``directory`` into a new ``<prefix>-<time>/`` sub-folder.

    Nothing is deleted or copied: each entry is renamed (atomic within one file system).

    Returns:
        The sub-folder, or ``None`` when none of ``names`` was present.
    """
    directory = pathlib.Path(directory)
    present = [name for name in names if (directory / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = directory / f"{prefix}-{stamp}"
    suffix = 1
    while backup.exists():
        backup = directory / f"{prefix}-{stamp}-{suffix}"
        suffix += 1
    backup.mkdir()
    for name in present:
        os.replace(directory / name, backup / name)
    return backup


def claim(directory: str | os.PathLike, outputs: Iterable[str], *, overwrite: bool, what: str,
          hint: str = "pass --overwrite to move them aside.") -> pathlib.Path | None:
    """Makes ``directory`` ready for a new run that writes ``outputs``.

    Args:
        directory: created if missing.
        outputs: the names the run writes (files or folders).
        overwrite: move present outputs into a backup sub-folder instead of refusing.
        what: what the outputs are, for the message (``"a meta-training run"``).
        hint: the end of the refusal message: what the user can do.

    Returns:
        The backup sub-folder the old outputs were moved to, or ``None``.

    Raises:
        OutputExistsError: ``directory`` holds some of ``outputs`` and ``overwrite`` is false.
        ValueError: ``directory`` exists and is not a directory.
    """
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"output path {str(directory)!r} exists and is not a directory; choose another --out.")
    outputs = list(outputs)
    present = existing_outputs(directory, outputs)
    if present and not overwrite:
        raise OutputExistsError(f"{str(directory)!r} already holds {what} ({', '.join(present)}); {hint}")
    directory.mkdir(parents=True, exist_ok=True)
    return move_aside(directory, outputs) if present else None


def _read_holder(path: pathlib.Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class DirectoryLock:
    """An exclusive, re-entrant lock on a directory, held by this process until :meth:`release`.

    Args:
        directory: the directory (created if missing); the lock file is ``<directory>/lopt.lock``.

    Example:
        >>> import tempfile
        >>> lock = DirectoryLock(tempfile.mkdtemp()).acquire()
        >>> lock.holder()["pid"] == os.getpid()
        True
        >>> lock.release()
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        self.path = self.directory / LOCK_NAME
        self._owned = False

    def __repr__(self) -> str:
        return f"DirectoryLock({str(self.directory)!r})"

    def holder(self) -> dict[str, Any]:
        """The record of the process that holds (or last held) the lock: pid, host, started."""
        return _read_holder(self.path)

    def acquire(self) -> DirectoryLock:
        """Takes the lock (or deepens this process's hold on it).

        Raises:
            DirectoryInUseError: another live process holds it (names its PID and host).
        """
        if self._owned:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._owned = True
            return self
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while locked
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                holder = self.holder()
                who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                       f"{holder.get('started', '?')}") if holder else "another process"
                raise DirectoryInUseError(
                    f"{str(self.directory)!r} is in use by {who}; wait for that run to finish or stop it, "
                    "or write to another directory.") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        _HELD[key] = [handle, 1]
        self._owned = True
        return self

    def release(self) -> None:
        """Gives up this hold; the lock is free once every hold of this process is released."""
        if not self._owned:
            return
        self._owned = False
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        handle = held[0]
        try:
            handle.seek(0)
            handle.truncate()  # an empty lock file: nobody holds it
            handle.flush()
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> DirectoryLock:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
