"""Per-task results of the held-out benchmark kept on disk as they finish, so a run can resume.

A rented GPU call returns only what it wrote before its time limit, and the full held-out suite
(13 tasks at 1,000-10,000 steps, 16 Adam runs per seed each) can take longer than one call. With
``--partial FILE``, ``benchmarks/pretrained_heldout.py`` rewrites FILE (atomically) after every
task; a later run with the same FILE and the same settings skips the tasks already there, so the
suite can be split over several calls or machines and finished where the last task ran. A run with
other settings (another candidate file, seed count or horizon scale) is refused rather than mixed
in: the file then belongs to another measurement. The device is not a setting: each task records
the device it ran on (the small tasks run faster on a CPU than on an H200, whose compilation
dominates them), and the results name every device.

The file is plain JSON (numbers and strings); the candidate is identified by the SHA-256 digest
its theta file records (:func:`lopt.checkpoint.stored_digest`).

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "partial.json")
    >>> part = PartialResults(path, {"candidate": "prodigy", "seeds": 1})
    >>> part.add({"name": "losg_rosenbrock", "candidate_final_test": 1.5})
    >>> PartialResults(path, {"candidate": "prodigy", "seeds": 1}).done()
    ['losg_rosenbrock']
"""

from __future__ import annotations

import json
import os
from typing import Any

from lopt import checkpoint

_FORMAT = "lopt.heldout_partial"


class PartialResults:
    """The per-task records of one measurement, read from and written back to ``path``.

    Args:
        path: the JSON file; created on the first :meth:`add`.
        settings: what makes two runs the same measurement (JSON values). An existing file with
            other settings raises ``ValueError`` naming the keys that differ.
    """

    def __init__(self, path: str, settings: dict[str, Any]):
        self.path, self.settings = path, dict(settings)
        self.tasks: list[dict[str, Any]] = []
        if os.path.exists(path):
            with open(path) as f:
                document = json.load(f)
            if document.get("format") != _FORMAT:
                raise ValueError(f"--partial {path!r} is not a held-out partial-results file "
                                 f"(format {document.get('format')!r}); choose another file.")
            recorded = document.get("settings", {})
            differ = sorted(k for k in set(recorded) | set(self.settings) if recorded.get(k) != self.settings.get(k))
            if differ:
                detail = ", ".join(f"{k}: file {recorded.get(k)!r}, this run {self.settings.get(k)!r}" for k in differ)
                raise ValueError(f"--partial {path!r} holds another measurement ({detail}); use a new file "
                                 "or the settings it was made with.")
            self.tasks = list(document.get("tasks", []))

    def done(self) -> list[str]:
        """Names of the tasks already measured, in the order they finished."""
        return [t["name"] for t in self.tasks]

    def get(self, name: str) -> dict[str, Any]:
        """The record of task ``name`` (``KeyError`` if it is not there)."""
        for task in self.tasks:
            if task["name"] == name:
                return task
        raise KeyError(name)

    def add(self, record: dict[str, Any]) -> None:
        """Appends one task's record (replacing none) and rewrites the file atomically."""
        if record["name"] in self.done():
            raise ValueError(f"task {record['name']!r} is already in {self.path!r}.")
        self.tasks.append(record)
        document = {"format": _FORMAT, "settings": self.settings, "tasks": self.tasks}
        checkpoint.atomic_write(self.path, (json.dumps(document) + "\n").encode("utf-8"))
