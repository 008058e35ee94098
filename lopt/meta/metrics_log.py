"""Meta-training metrics as JSON Lines: one object per outer step, appended and flushed.

Every line is ``{"step": <int>, <name>: <value>, ...}``. Values may be Python, NumPy or JAX
numbers, arrays (written as nested lists), strings, ``None``, and lists or dicts of those.
JSON has no NaN or infinity, so non-finite floats are written as the **strings** ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (not ``null``, which would lose the sign of an infinity);
:func:`read_metrics` turns exactly those strings back into floats, so a string metric whose
value is one of them reads back as a float.

A resumed run calls :meth:`MetricsLog.truncate_after` with the restored checkpoint's step, so
lines written after that checkpoint (by the run that was killed) are not duplicated. A line cut
short by a crash is dropped, with a warning, by the reader and by the next write.

TensorBoard event files are not written: neither ``tensorboard`` nor ``tensorboardX`` is a
dependency, and the JSON Lines file converts to anything (``pandas.read_json(path,
lines=True)``).

Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
    >>> log = MetricsLog(path)
    >>> _ = log.write(1, {"loss": jnp.float32(0.5), "grad_norm": float("inf")})
    >>> _ = log.write(2, {"loss": 0.25, "grad_norm": 1.0})
    >>> read_metrics(path)
    [{'step': 1, 'loss': 0.5, 'grad_norm': inf}, {'step': 2, 'loss': 0.25, 'grad_norm': 1.0}]
    >>> MetricsLog(path).truncate_after(1)
    1
    >>> [r["step"] for r in read_metrics(path)]
    [1]
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from lopt import checkpoint

__all__ = ["MetricsLog", "read_metrics"]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _plain(value: Any, where: str) -> Any:
    """Converts a metric value to JSON-ready Python (non-finite floats become strings)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        if isinstance(value, jax.Array) and jax.numpy.issubdtype(value.dtype, jax.dtypes.prng_key):
            raise TypeError(f"MetricsLog: {where} is a PRNG key; log jax.random.key_data(...) instead.")
        array = np.asarray(jax.device_get(value))
        if array.dtype.kind not in "biuf":
            raise TypeError(f"MetricsLog: {where} has dtype {array.dtype}; log numbers, strings or "
                            "lists and dicts of those.")
        return _plain(array.tolist() if array.dtype.kind != "f" else array.astype(np.float64).tolist(),
                      where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"MetricsLog: {where} has type {type(value).__name__}; log numbers (Python, "
                    "NumPy or JAX), strings, None, or lists and dicts of those.")


def _restore(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


def _parse_lines(path: pathlib.Path) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """Returns ``(records, their raw lines, numbers of the unreadable lines)``."""
    records, raws, bad = [], [], []
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if not isinstance(record, dict) or isinstance(record.get("step"), bool) or \
                not isinstance(record.get("step"), int):
            bad.append(number)
            continue
        records.append(_restore(record))
        raws.append(line)
    return records, raws, bad


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a metrics file written by :class:`MetricsLog`.

    Args:
        path: the ``.jsonl`` file.

    Returns:
        One dict per line, in file order, with ``"NaN"``/``"Infinity"``/``"-Infinity"`` strings
        turned back into floats. Unreadable lines (e.g. one cut short by a crash) are skipped
        with a warning naming them.

    Raises:
        FileNotFoundError: there is no file at ``path``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {str(path)!r}.")
    records, _, bad = _parse_lines(path)
    if bad:
        warnings.warn(f"read_metrics: skipped unreadable line(s) {bad} of {str(path)!r}.",
                      RuntimeWarning, stacklevel=2)
    return records


class MetricsLog:
    """Appends one JSON object per outer step to a file; every line is on disk when written.

    Each :meth:`write` opens the file in append mode, writes one line and closes it (flushing
    it), so there is no handle to close and a log for a resumed run keeps what is there. Opening
    per line costs microseconds, nothing next to an outer step.

    Args:
        path: the ``.jsonl`` file (its folder is created on the first write).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._checked = False

    def __repr__(self) -> str:
        return f"MetricsLog({str(self.path)!r})"

    def _check_last_line(self) -> None:
        """Drops a last line cut short by a crash, so the next line is not glued onto it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                complete = f.read(1) == b"\n"
            if not complete:
                warnings.warn(f"MetricsLog: dropping an incomplete last line of {str(self.path)!r}.",
                              RuntimeWarning, stacklevel=3)
                self._rewrite(lambda record: True)
        self._checked = True

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Appends ``{"step": step, **metrics}`` as one line and flushes it.

        Args:
            step: the outer step (a non-negative integer).
            metrics: name -> value (see the module docstring for accepted values); ``"step"``
                is reserved.

        Returns:
            The record as written (non-finite floats as strings).

        Raises:
            TypeError: a value that cannot be written (names it). ValueError: a bad step, or a
                metric named ``"step"``.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"MetricsLog.write: step={step!r} must be a non-negative integer.")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"MetricsLog.write: metrics must be a dict, got {type(metrics).__name__}.")
        if "step" in metrics:
            raise ValueError("MetricsLog.write: 'step' is reserved for the step argument; rename "
                             "that metric.")
        record = {"step": int(step), **{str(k): _plain(v, repr(k)) for k, v in metrics.items()}}
        line = json.dumps(record, allow_nan=False)
        if not self._checked:
            self._check_last_line()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return record

    def _rewrite(self, keep) -> int:
        """Atomically rewrites the file with the records for which ``keep(record)``; returns
        how many lines (records and unreadable lines) were dropped."""
        records, raws, bad = _parse_lines(self.path)
        kept = [raw for record, raw in zip(records, raws) if keep(record)]
        text = "".join(raw + "\n" for raw in kept)
        checkpoint.atomic_write(self.path, text.encode("utf-8"))
        return len(records) - len(kept) + len(bad)

    def truncate_after(self, step: int) -> int:
        """Drops every line with a step greater than ``step`` (and unreadable lines).

        Call it when resuming from the checkpoint of ``step``. The file is rewritten
        atomically; a missing file is left missing.

        Args:
            step: the step of the checkpoint being resumed.

        Returns:
            The number of lines dropped.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"MetricsLog.truncate_after: step={step!r} must be an integer.")
        if not self.path.is_file():
            return 0
        self._checked = True  # the rewrite drops any incomplete last line too
        return self._rewrite(lambda record: record["step"] <= step)
