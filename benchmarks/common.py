"""Helpers shared by the benchmark scripts: timing and saving results."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable

import jax

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def device_tag() -> str:
    """``cpu`` or ``gpu-<device kind>`` for result file names."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return f"{device.platform}-{device.device_kind.replace(' ', '_')}"


def environment() -> dict:
    """Versions and hardware the numbers were measured on."""
    device = jax.devices()[0]
    return {"jax": jax.__version__, "backend": device.platform, "device": device.device_kind,
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def busy_ms(intervals: list[tuple[float, float]]) -> float:
    """Milliseconds covered by the union of ``(start_us, end_us)`` intervals (overlaps counted once):
    how long a device whose kernels ran in those intervals was busy.

    Example:
        >>> busy_ms([(0.0, 1000.0), (500.0, 1500.0), (3000.0, 4000.0)])
        2.5
    """
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total / 1e3


def time_call(fn: Callable[[], object], *, repeats: int = 3) -> tuple[float, float]:
    """Returns (first call seconds incl. compilation, best of ``repeats`` later calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return first, best


def refuse_existing_out(parser, path: str | None) -> None:
    """Stops with a usage error when ``--out`` names an existing file: a result is never overwritten."""
    if path and os.path.exists(path):
        parser.error(f"--out={path!r} exists; choose a new file (a result is never overwritten)")


def free_path(path: str) -> str:
    """``path`` if no file is there, else the first free ``<stem>-2<ext>``, ``<stem>-3<ext>``, ...

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> open(os.path.join(d, "r.json"), "w").close()
        >>> os.path.basename(free_path(os.path.join(d, "r.json")))
        'r-2.json'
    """
    stem, ext = os.path.splitext(path)
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def default_path(name: str) -> str:
    """``results/<name>_<device>.json``, or the first free ``-N`` name beside it when that file exists.

    A benchmark that writes its result several times as it goes resolves this once and passes it
    to every :func:`save`, so its partial and final writes go to one new file.
    """
    os.makedirs(RESULTS_DIR, exist_ok=True)
    return free_path(os.path.join(RESULTS_DIR, f"{name}_{device_tag()}.json"))


def save(name: str, payload: dict, path: str | None = None) -> str:
    """Writes ``payload`` plus the environment to ``path``, by default ``results/<name>_<device>.json``.

    A default path that holds an earlier result is not overwritten: the result goes to the first
    free ``results/<name>_<device>-N.json`` (:func:`free_path`). An explicit ``path`` is the
    caller's choice (the benchmarks refuse an existing ``--out`` with :func:`refuse_existing_out`).
    """
    path = default_path(name) if path is None else path
    with open(path, "w") as f:
        json.dump({"environment": environment(), **payload}, f, indent=2)
    return path
