"""A local learning-curve dataset: every run of ``lopt eval`` and of the opt_list search.

TaskSet released the learning curves of ~29M models; lopt keeps its own, locally, in a
directory of **shards**. A shard is one safetensors file written by :func:`lopt.checkpoint.save_tree`
(array-only, atomic, SHA-256 digest verified on every read) holding one batch of runs of one
horizon as columns:

==============  ==============  ===============================================================
column          array           meaning
==============  ==============  ===============================================================
seed            int32 [N]       the run's seed
num_steps       int32 [N]       its horizon T
train_loss      float32 [N, T]  training loss of steps 1..T (NaN after a divergence)
eval_steps      int32 [E]       the evaluation steps (0 and T included), shared by the shard
valid_loss ...  float32 [N, E]  valid/test loss and accuracy at ``eval_steps``
==============  ==============  ===============================================================

and, in the file's JSON metadata, the string columns ``task`` (task id), ``optimizer``,
``hparams`` (canonical JSON of the setting) and ``source`` (``"eval"``, ``"opt_list"``...), plus
the config of every task id. A run is identified by its *cell* ``(task, optimizer, hparams,
seed, num_steps)``; :meth:`CurveDataset.append` skips cells already present, so an interrupted
writer resumes without duplicates.

Why not Parquet: it would add pyarrow (~100 MB) to a library whose only other file format is
safetensors + JSON; shards give the same columnar, append-only layout (one new file per
append, never a rewrite), and float32 arrays are ~3x smaller than the CSV text of the same
runs. They are not compressed; :meth:`CurveTable.to_pandas` gives a DataFrame when pandas is
installed.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> data = CurveDataset(tempfile.mkdtemp())
    >>> runs = RunBatch(task=["t0", "t0"], optimizer=["adam", "adam"], hparams=["{}", "{}"], seed=[0, 1],
    ...                 train_loss=np.ones((2, 4)), eval_steps=[0, 4], valid_loss=np.ones((2, 2)), source="eval")
    >>> data.append(runs)
    2
    >>> data.append(runs)  # the same cells again: skipped
    0
    >>> table = load(data.directory)
    >>> len(table), table["seed"].tolist(), table["final_valid_loss"].tolist()
    (2, [0, 1], [1.0, 1.0])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lopt import checkpoint

__all__ = ["CurveDataset", "CurveTable", "RunBatch", "from_results", "load"]

FORMAT = "lopt.curves"
FORMAT_VERSION = 1
EVAL_COLUMNS = ("valid_loss", "valid_accuracy", "test_loss", "test_accuracy")
STRING_COLUMNS = ("task", "optimizer", "hparams", "source")
_SHARD = re.compile(r"^shard-(\d{6})\.safetensors$")

Cell = tuple[str, str, str, int, int]  # task, optimizer, hparams, seed, num_steps


def _strings(name: str, values: Any, n: int | None) -> list[str]:
    if isinstance(values, str):
        values = [values] * (n or 1)
    values = [str(v) for v in values]
    if n is not None and len(values) != n:
        raise ValueError(f"RunBatch: {name} has {len(values)} entries but there are {n} runs.")
    return values


@dataclasses.dataclass
class RunBatch:
    """Runs of one horizon and one evaluation schedule, as columns (what one append writes).

    Attributes:
        task, optimizer, hparams: ``[N]`` strings (a single string is repeated).
        seed: ``[N]`` ints.
        train_loss: ``[N, T]``.
        eval_steps: ``[E]``.
        valid_loss, valid_accuracy, test_loss, test_accuracy: ``[N, E]`` (NaN-filled if absent).
        source: ``[N]`` strings or one string: which program produced the runs.
        task_configs: ``{task id: config dict}`` for the tasks of the batch (optional).
    """

    task: Sequence[str]
    optimizer: Sequence[str]
    hparams: Sequence[str]
    seed: Sequence[int]
    train_loss: Any
    eval_steps: Any
    valid_loss: Any = None
    valid_accuracy: Any = None
    test_loss: Any = None
    test_accuracy: Any = None
    source: Sequence[str] | str = "eval"
    task_configs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_loss = np.asarray(self.train_loss, dtype=np.float32)
        if self.train_loss.ndim != 2 or 0 in self.train_loss.shape:
            raise ValueError(f"RunBatch: train_loss must be [num_runs, num_steps], got shape {self.train_loss.shape}.")
        n, steps = self.train_loss.shape
        self.eval_steps = np.asarray(self.eval_steps, dtype=np.int32).reshape(-1)
        if self.eval_steps.size and (self.eval_steps.min() < 0 or self.eval_steps.max() > steps):
            raise ValueError(f"RunBatch: eval_steps {self.eval_steps.tolist()} must lie in [0, {steps}].")
        for name in EVAL_COLUMNS:
            value = getattr(self, name)
            array = (np.full((n, self.eval_steps.size), np.nan, np.float32) if value is None
                     else np.asarray(value, dtype=np.float32))
            if array.shape != (n, self.eval_steps.size):
                raise ValueError(f"RunBatch: {name} must have shape {(n, self.eval_steps.size)}, got {array.shape}.")
            setattr(self, name, array)
        for name in ("task", "optimizer", "hparams"):
            setattr(self, name, _strings(name, getattr(self, name), n))
        self.source = _strings("source", self.source, n)
        self.seed = np.asarray(self.seed, dtype=np.int32).reshape(-1)
        if self.seed.size != n:
            raise ValueError(f"RunBatch: seed has {self.seed.size} entries but there are {n} runs.")

    def __len__(self) -> int:
        return self.train_loss.shape[0]

    def cells(self) -> list[Cell]:
        """The cell of every run."""
        steps = self.train_loss.shape[1]
        return [(t, o, h, int(s), steps) for t, o, h, s in zip(self.task, self.optimizer, self.hparams, self.seed)]

    def subset(self, rows: Sequence[int]) -> RunBatch:
        """The runs at ``rows``."""
        rows = list(rows)
        pick = lambda values: [values[i] for i in rows]
        return RunBatch(pick(self.task), pick(self.optimizer), pick(self.hparams), self.seed[rows],
                        self.train_loss[rows], self.eval_steps, *(getattr(self, c)[rows] for c in EVAL_COLUMNS),
                        source=pick(self.source),
                        task_configs={k: v for k, v in self.task_configs.items() if k in set(pick(self.task))})


class CurveDataset:
    """A curve-dataset directory, opened for appending (created if absent).

    Args:
        directory: where the shards live.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"curve dataset {str(self.directory)!r} is a file; give a directory.")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cells: set[Cell] | None = None

    def shards(self) -> list[Path]:
        """The shard files, in the order they were written."""
        return sorted(p for p in self.directory.iterdir() if _SHARD.match(p.name))

    def cells(self) -> set[Cell]:
        """Every cell already in the dataset (read from the shards' metadata, digests checked)."""
        if self._cells is None:
            self._cells = set()
            for path in self.shards():
                meta = checkpoint.read_metadata(path)
                _check_meta(meta, path)
                steps = [int(s) for s in meta["num_steps"]]
                self._cells.update(zip(meta["task"], meta["optimizer"], meta["hparams"],
                                       (int(s) for s in meta["seed"]), steps))
        return self._cells

    def append(self, runs: RunBatch) -> int:
        """Writes the runs whose cells are not yet present as one new shard; returns how many."""
        if not isinstance(runs, RunBatch):
            raise TypeError(f"CurveDataset.append takes a RunBatch, got {type(runs).__name__}.")
        present = self.cells()
        fresh, seen = [], set()
        for i, cell in enumerate(runs.cells()):
            if cell not in present and cell not in seen:
                fresh.append(i)
                seen.add(cell)
        if not fresh:
            return 0
        batch = runs.subset(fresh)
        shards = self.shards()
        number = int(_SHARD.match(shards[-1].name).group(1)) + 1 if shards else 0
        arrays = {"seed": batch.seed, "num_steps": np.full(len(batch), batch.train_loss.shape[1], np.int32),
                  "train_loss": batch.train_loss, "eval_steps": batch.eval_steps,
                  **{c: getattr(batch, c) for c in EVAL_COLUMNS}}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                **{c: list(getattr(batch, c)) for c in STRING_COLUMNS},
                "seed": batch.seed.tolist(), "num_steps": arrays["num_steps"].tolist(),
                "task_configs": {k: _jsonable(v) for k, v in batch.task_configs.items()}}
        checkpoint.save_tree(self.directory / f"shard-{number:06d}.safetensors", arrays, meta)
        present.update(batch.cells())
        return len(batch)

    def digest(self) -> str:
        """SHA-256 over the shards' names and stored digests: identifies the dataset's contents."""
        h = hashlib.sha256()
        for path in self.shards():
            h.update(path.name.encode())
            h.update(str(checkpoint.stored_digest(path)).encode())
        return h.hexdigest()


def _jsonable(config: Any) -> Any:
    return config.to_dict() if hasattr(config, "to_dict") else json.loads(json.dumps(config))


def _check_meta(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lopt curve-dataset shard (format {FORMAT!r}).")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {meta['format_version']}, newer than this lopt reads "
                         f"({FORMAT_VERSION}); upgrade lopt.")


@dataclasses.dataclass
class CurveTable:
    """A loaded curve dataset: one row per run.

    Scalar columns (``table[name]``, numpy arrays of length ``len(table)``): ``task``,
    ``optimizer``, ``hparams``, ``source`` (str), ``seed``, ``num_steps`` (int), and
    ``initial_valid_loss``, ``final_valid_loss``, ``final_test_loss``, ``final_valid_accuracy``,
    ``final_test_accuracy``, ``final_train_loss`` (the mean of the last 5% of steps) (float).
    Curves (ragged across horizons): :attr:`train_loss`, :attr:`eval_steps` and
    :attr:`evals` are lists with one array per row.

    Attributes:
        columns: the scalar columns.
        train_loss: per row, ``[T]``.
        eval_steps: per row, ``[E]``.
        evals: per row, ``{"valid_loss": [E], ...}``.
        task_configs: config of every task id.
        digest: :meth:`CurveDataset.digest` of the loaded files.
    """

    columns: dict[str, np.ndarray]
    train_loss: list[np.ndarray]
    eval_steps: list[np.ndarray]
    evals: list[dict[str, np.ndarray]]
    task_configs: dict[str, Any]
    digest: str

    def __len__(self) -> int:
        return len(self.train_loss)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(f"CurveTable has no column {name!r}; columns: {', '.join(self.columns)}.")
        return self.columns[name]

    def where(self, **equal: Any) -> np.ndarray:
        """Row indices whose columns equal the given values, e.g. ``where(optimizer="adam")``."""
        mask = np.ones(len(self), dtype=bool)
        for name, value in equal.items():
            mask &= self[name] == value
        return np.flatnonzero(mask)

    def to_pandas(self):
        """The scalar columns and the curves (object columns) as a pandas DataFrame."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("CurveTable.to_pandas needs pandas: pip install pandas (or use table.columns, "
                              "plain numpy arrays).") from None
        return pd.DataFrame({**self.columns, "train_loss": self.train_loss, "eval_steps": self.eval_steps,
                             **{c: [e[c] for e in self.evals] for c in EVAL_COLUMNS}})


def load(directory: str | os.PathLike) -> CurveTable:
    """Loads every shard of a curve dataset (digests verified) into a :class:`CurveTable`.

    Raises:
        FileNotFoundError: no such directory.
        lopt.checkpoint.DigestMismatchError: a damaged shard.
        ValueError: a file that is not a shard of this format.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"curve dataset {str(directory)!r} does not exist; `lopt eval` writes one into "
                                "<results dir>/curves and `lopt optlist learn` into <out>/curves.")
    dataset = CurveDataset(directory)
    strings: dict[str, list[str]] = {c: [] for c in STRING_COLUMNS}
    ints: dict[str, list[np.ndarray]] = {"seed": [], "num_steps": []}
    train, steps, evals, configs = [], [], [], {}
    for path in dataset.shards():
        tree, meta = checkpoint.load_tree(path)
        _check_meta(meta, path)
        arrays = {k: np.asarray(v) for k, v in tree.items()}
        for c in STRING_COLUMNS:
            strings[c].extend(meta[c])
        for c, values in ints.items():
            values.append(arrays[c].reshape(-1))
        train.extend(arrays["train_loss"])
        steps.extend([arrays["eval_steps"]] * len(arrays["seed"]))
        evals.extend({c: arrays[c][i] for c in EVAL_COLUMNS} for i in range(len(arrays["seed"])))
        configs.update(meta.get("task_configs", {}))
    columns: dict[str, np.ndarray] = {c: np.asarray(v, dtype=str) for c, v in strings.items()}
    columns.update({c: np.concatenate(v) if v else np.zeros(0, np.int32) for c, v in ints.items()})

    def last(column: str) -> np.ndarray:
        return np.asarray([e[column][-1] if e[column].size else np.nan for e in evals], dtype=np.float64)

    columns["initial_valid_loss"] = np.asarray([e["valid_loss"][0] if e["valid_loss"].size else np.nan
                                                for e in evals], dtype=np.float64)
    for c in EVAL_COLUMNS:
        columns[f"final_{c}"] = last(c)
    columns["final_train_loss"] = np.asarray([np.mean(t[-max(1, t.size // 20):]) for t in train], dtype=np.float64)
    return CurveTable(columns, train, steps, evals, configs, dataset.digest())


def from_results(results_dir: str | os.PathLike, dataset_dir: str | os.PathLike | None = None) -> int:
    """(Re)builds the curve dataset of an evaluation results directory from its ``results.csv``.

    For results written before the dataset existed, or to regenerate a deleted one. Cells
    already in the dataset are skipped, so it can be re-run at any time.

    Args:
        results_dir: a directory written by :func:`lopt.evaluate.evaluate`.
        dataset_dir: where to write (default ``<results_dir>/curves``).

    Returns:
        The number of runs added.
    """
    from lopt.evaluate.results import load as load_results  # results.py does not import this module

    results = load_results(results_dir)
    tasks = {t["id"]: t["config"] for t in results.header["suite"]["tasks"] + results.header["suite"]["tuning_tasks"]}
    dataset = CurveDataset(dataset_dir or Path(results_dir) / "curves")
    added = 0
    for (task, label, hkey), run in sorted(results.runs.items()):
        n = len(run.seeds)
        added += dataset.append(RunBatch(
            task=[task] * n, optimizer=[label] * n, hparams=[hkey] * n, seed=run.seeds, train_loss=run.train_loss,
            eval_steps=run.eval_steps, valid_loss=run.valid_loss, valid_accuracy=run.valid_accuracy,
            test_loss=run.test_loss, test_accuracy=run.test_accuracy, source="eval",
            task_configs={task: tasks[task]} if task in tasks else {}))
    return added
