"""The results directory: a tidy CSV of every step of every run, and a JSON header.

``results.csv`` has one row per task x optimizer x hyperparameters x seed x step, with columns
:data:`COLUMNS`. Row ``step = t`` holds the training loss of step ``t`` (the loss of the batch
the ``t``-th update was computed from; empty for ``t = 0``) and, where ``t`` is an evaluation
step, the valid/test loss and accuracy after ``t`` updates (empty elsewhere; ``nan`` after a
divergence). A *cell* is one (task, optimizer, hyperparameters, seed): the rows of a cell are
written together, in step order, and a cell is finished when its last step is in the file. The
last step is the suite's horizon, or the optimizer's own ``num_steps`` in the header (a baseline
search run longer than the candidates, to measure speedups past 1x).

``results.json`` records the format version, library versions, the suite (its tasks' configs
included) and the optimizers and baselines evaluated. Re-opening a directory checks that it
holds the same suite, drops a half-written tail (an interrupted write) and reports the
finished cells, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lopt import checkpoint

__all__ = ["COLUMNS", "CSV_NAME", "HEADER_NAME", "Results", "ResultsWriter", "Run", "combine", "horizon", "load",
           "make_header", "merge_headers", "read_header", "versions"]

FORMAT = "lopt.eval.results"
FORMAT_VERSION = 1
CSV_NAME = "results.csv"
HEADER_NAME = "results.json"
COLUMNS = ("task", "optimizer", "hparams", "seed", "step", "train_loss", "valid_loss", "valid_accuracy",
           "test_loss", "test_accuracy")
EVAL_COLUMNS = ("valid_loss", "valid_accuracy", "test_loss", "test_accuracy")

CellKey = tuple[str, str, str, int]  # task id, optimizer label, hparams JSON, seed
RunKey = tuple[str, str, str]  # task id, optimizer label, hparams JSON


def versions() -> dict[str, str]:
    """Versions of lopt, jax, optax, numpy and python (for headers)."""
    import jax
    import optax

    import lopt

    return {"lopt": lopt.__version__, "jax": jax.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _atomic_write(path: Path, text: str) -> None:
    checkpoint.atomic_write(path, text.encode("utf-8"))


def read_header(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads ``results.json`` of a results directory.

    Raises:
        FileNotFoundError: no header there (not a results directory).
        ValueError: a header of another format or a newer version.
    """
    path = Path(directory) / HEADER_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not an evaluation results directory (no {HEADER_NAME}).")
    header = json.loads(path.read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lopt evaluation header (format={header.get('format')!r}).")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {header['format_version']}, newer than this lopt "
                         f"understands ({FORMAT_VERSION}); upgrade lopt.")
    return header


def merge_headers(old: Mapping[str, Any], new: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Merges two headers of the same suite: optimizers and baselines are united.

    Raises:
        ValueError: the suites differ, or one optimizer label was run with other settings.
    """
    if old["suite"] != new["suite"]:
        differing = sorted(k for k in set(old["suite"]) | set(new["suite"])
                           if old["suite"].get(k) != new["suite"].get(k))
        raise ValueError(f"{where} holds results of a different suite or budget (differs in {differing}); "
                         "use another output directory, or the same suite settings.")
    optimizers = dict(old["optimizers"])
    for label, info in new["optimizers"].items():
        if label in optimizers and optimizers[label] != info:
            raise ValueError(f"{where} already has optimizer {label!r} with other settings or another theta; "
                             "give this one another label (--label) or use another output directory.")
        optimizers[label] = info
    baselines = list(old["baselines"]) + [b for b in new["baselines"] if b not in old["baselines"]]
    return {**old, "optimizers": optimizers, "baselines": baselines}


def make_header(suite: Mapping[str, Any], optimizers: Mapping[str, Any], baselines: Sequence[str]) -> dict[str, Any]:
    """A new header for ``suite`` (a :meth:`Suite.to_dict`), optimizer descriptions and baselines."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "suite": dict(suite),
            "optimizers": dict(optimizers), "baselines": list(baselines), "columns": list(COLUMNS)}


def horizon(header: Mapping[str, Any], label: str) -> int:
    """The number of steps of optimizer ``label``'s runs: its own ``num_steps`` or the suite's.

    Example:
        >>> header = {"suite": {"num_steps": 100}, "optimizers": {"adam_lr_grid": {"num_steps": 400}}}
        >>> horizon(header, "adam_lr_grid"), horizon(header, "sgd")
        (400, 100)
    """
    info = header.get("optimizers", {}).get(label) or {}
    return int(info.get("num_steps") or header["suite"]["num_steps"])


def _parse_rows(text: str) -> tuple[list[list[str]], bool]:
    """Rows of a results CSV (header skipped) and whether the text ended mid-line."""
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] == list(COLUMNS):
        rows = rows[1:]
    return [r for r in rows if len(r) == len(COLUMNS)], torn


def _finished_rows(rows: list[list[str]], header: Mapping[str, Any]) -> tuple[list[list[str]], set[CellKey]]:
    """Keeps the rows of finished cells (those whose last step is present), first copy only."""
    finished: set[CellKey] = set()
    for row in rows:
        if int(row[4]) == horizon(header, row[1]):
            finished.add((row[0], row[1], row[2], int(row[3])))
    kept, seen_steps = [], set()
    for row in rows:
        key = (row[0], row[1], row[2], int(row[3]))
        if key in finished and (key, row[4]) not in seen_steps:
            seen_steps.add((key, row[4]))
            kept.append(row)
    return kept, finished


def _rows_text(rows: Iterable[Sequence[Any]], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


class ResultsWriter:
    """Opens (or resumes) a results directory and appends finished cells to it.

    Example:
        >>> import tempfile
        >>> from lopt.evaluate.suites import make_suite
        >>> suite = make_suite("quick", num_steps=2)
        >>> header = make_header(suite.to_dict(), {}, [])
        >>> writer = ResultsWriter(tempfile.mkdtemp(), header)
        >>> writer.append([["t", "adam", "{}", 0, step, "", "", "", "", ""] for step in range(3)])
        >>> writer.finished
        {('t', 'adam', '{}', 0)}
    """

    def __init__(self, directory: str | os.PathLike, header: Mapping[str, Any]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        header_path = self.directory / HEADER_NAME
        if header_path.exists():
            header = merge_headers(read_header(self.directory), header, where=str(self.directory))
        _atomic_write(header_path, json.dumps(header, indent=1, sort_keys=True))
        self.header = dict(header)
        self.path = self.directory / CSV_NAME
        self.finished: set[CellKey] = set()
        if self.path.exists():
            rows, torn = _parse_rows(self.path.read_text())
            kept, self.finished = _finished_rows(rows, self.header)
            if torn or len(kept) != len(rows):  # an interrupted write: keep only finished cells
                _atomic_write(self.path, _rows_text(kept, header=True))
        else:
            _atomic_write(self.path, _rows_text([], header=True))

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        """Appends the rows of whole cells and marks those whose last step is included finished."""
        with open(self.path, "a", newline="") as f:
            f.write(_rows_text(rows, header=False))
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            if int(row[4]) == horizon(self.header, str(row[1])):
                self.finished.add((str(row[0]), str(row[1]), str(row[2]), int(row[3])))


@dataclasses.dataclass
class Run:
    """The curves of one (task, optimizer, hyperparameters) over its seeds.

    Attributes:
        seeds: ``[S]`` the seeds, increasing.
        train_loss: ``[S, T]`` training loss of steps ``1..T``.
        eval_steps: ``[E]`` the evaluation steps (0 and ``T`` included).
        valid_loss, valid_accuracy, test_loss, test_accuracy: ``[S, E]``.
    """

    seeds: np.ndarray
    train_loss: np.ndarray
    eval_steps: np.ndarray
    valid_loss: np.ndarray
    valid_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray

    @property
    def num_steps(self) -> int:
        """The run's horizon T."""
        return int(self.train_loss.shape[1])

    def prefix(self, num_steps: int) -> Run:
        """The first ``num_steps`` steps of a longer run (its evaluations up to ``num_steps``).

        For a run without a horizon-dependent schedule (constant-learning-rate Adam), this equals
        a ``num_steps``-step run exactly: the same params, batches and evaluation batches.

        Raises:
            ValueError: ``num_steps`` is longer than the run, or not one of its evaluation steps.

        Example:
            >>> run = Run(np.array([0]), np.arange(1.0, 9.0)[None], np.array([0, 4, 8]),
            ...           *(np.array([[3.0, 2.0, 1.0]]),) * 4)
            >>> short = run.prefix(4)
            >>> short.train_loss.tolist(), short.eval_steps.tolist(), short.valid_loss.tolist()
            ([[1.0, 2.0, 3.0, 4.0]], [0, 4], [[3.0, 2.0]])
        """
        if num_steps == self.num_steps:
            return self
        if not 1 <= num_steps <= self.num_steps or num_steps not in set(self.eval_steps.tolist()):
            raise ValueError(f"Run.prefix: {num_steps} steps is not an evaluation step of this {self.num_steps}-step "
                             f"run (evaluated at {self.eval_steps.tolist()[:6]}...); evaluate with an eval_every "
                             "that divides the horizon.")
        keep = self.eval_steps <= num_steps
        return Run(self.seeds, self.train_loss[:, :num_steps], self.eval_steps[keep],
                   *(getattr(self, c)[:, keep] for c in EVAL_COLUMNS))


def _float(text: str) -> float:
    return float(text) if text else np.nan


@dataclasses.dataclass
class Results:
    """A loaded results directory: its header and its runs keyed by (task, optimizer, hparams)."""

    header: dict[str, Any]
    runs: dict[RunKey, Run]

    def run(self, task: str, optimizer: str, hparams: str) -> Run | None:
        """The run of one setting on one task, or None if it is not in the results."""
        return self.runs.get((task, optimizer, hparams))


def load(directory: str | os.PathLike) -> Results:
    """Loads the finished cells of a results directory, grouped into :class:`Run` s.

    Raises:
        FileNotFoundError: not a results directory.
    """
    header = read_header(directory)
    path = Path(directory) / CSV_NAME
    rows, _ = _parse_rows(path.read_text()) if path.exists() else ([], False)
    rows, _ = _finished_rows(rows, header)
    cells: dict[CellKey, list[list[str]]] = {}
    for row in rows:
        cells.setdefault((row[0], row[1], row[2], int(row[3])), []).append(row)
    grouped: dict[RunKey, dict[int, list[list[str]]]] = {}
    for (task, label, hkey, seed), cell in cells.items():
        grouped.setdefault((task, label, hkey), {})[seed] = sorted(cell, key=lambda r: int(r[4]))
    runs = {}
    for key, by_seed in grouped.items():
        seeds = sorted(by_seed)
        train = np.array([[_float(r[5]) for r in by_seed[s][1:]] for s in seeds])
        eval_rows = [[r for r in by_seed[s] if r[6] != ""] for s in seeds]
        metrics = {c: np.array([[_float(r[COLUMNS.index(c)]) for r in er] for er in eval_rows])
                   for c in EVAL_COLUMNS}
        runs[key] = Run(np.array(seeds), train, np.array([int(r[4]) for r in eval_rows[0]]), **metrics)
    return Results(header, runs)


def combine(directories: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merges results directories of one suite (e.g. different optimizers) into ``out``.

    Cells present in several directories are taken from the first. ``out`` may be one of the
    inputs' siblings or a new directory; it must not already hold another suite's results.

    Raises:
        ValueError: fewer than one input, or the inputs evaluated different suites.
        FileNotFoundError: an input is not a results directory.
    """
    if not directories:
        raise ValueError("combine: give at least one results directory.")
    header = read_header(directories[0])
    rows_by_dir = []
    for directory in directories:
        other = read_header(directory)
        header = merge_headers(header, other, where=str(directory))
        path = Path(directory) / CSV_NAME
        rows, _ = _parse_rows(path.read_text()) if path.exists() else ([], False)
        rows_by_dir.append(_finished_rows(rows, other)[0])
    writer = ResultsWriter(out, header)
    for rows in rows_by_dir:
        fresh = [r for r in rows if (r[0], r[1], r[2], int(r[3])) not in writer.finished]
        if fresh:
            writer.append(fresh)
    return writer.directory
