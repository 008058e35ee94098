"""opt_list: an ordered list of NAdamW settings, learned so that trying the first k works on new tasks.

TaskSet (Metz et al., arXiv 2002.11887, section 5) trained ~1,000 random NAdamW settings on
~1,000 tasks and ordered them greedily: the first setting has the lowest mean normalised loss
over tasks, and each next one lowers the mean of the *best-of-k* normalised loss the most. On a
new task, trying the first ``k`` settings and keeping the best is a strong, cheap baseline.

lopt ships its own list, learned by :func:`lopt.optimizers.learn_opt_list` on lopt's
``taskset`` distribution (how it was learned, on how many tasks, and its held-out best-of-k
curve are in :func:`opt_list_info`; see ``docs/opt_list.md``). This module holds the list, its
file format and the greedy selection; the search that produces the loss table lives in
:mod:`lopt.evaluate.opt_list_search`.

Conventions: a *loss table* is ``[num_tasks, num_settings]`` of task-normalised final losses
(:func:`lopt.meta.normalizer.normalize_loss`: initial loss -> 1, the task's best -> 0, clipped
to ``[-2, 2]``, diverged -> 2); NaN counts as the worst value.

Example:
    >>> from lopt.optimizers import get, opt_list
    >>> settings = opt_list(3)
    >>> len(settings), sorted(settings[0])[:3]
    (3, ['adamw_weight_decay', 'b1', 'b2'])
    >>> optimizers = [get("nadamw", total_steps=1000, **s) for s in settings]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lopt import checkpoint
from lopt.optimizers.nadamw import nadamw
from lopt.optimizers.search_spaces import search_space

__all__ = ["best_of_k", "expected_random_best_of_k", "greedy_order", "load_opt_list", "opt_list",
           "opt_list_info", "save_opt_list"]

FORMAT = "lopt.opt_list"
FORMAT_VERSION = 1
_PACKAGE_FILE = ("lopt.optimizers", "data/opt_list.json")


def _table(name: str, losses: Any) -> np.ndarray:
    try:
        table = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a [num_tasks, num_settings] array of numbers.") from None
    if table.ndim != 2 or 0 in table.shape:
        raise ValueError(f"{name} must be a non-empty [num_tasks, num_settings] array, got shape {table.shape}.")
    return np.where(np.isnan(table), np.inf, table)  # a diverged run is the worst value


def greedy_order(losses: Any, k: int | None = None) -> np.ndarray:
    """TaskSet's greedy ordering: each next setting minimises the mean best-of-k loss over tasks.

    Setting ``order[0]`` has the lowest mean loss; ``order[j]`` is the setting that, added to
    ``order[:j]``, gives the lowest mean over tasks of the per-task minimum. Ties (e.g. once the
    list reaches every task's best and the best-of-k saturates) go to the setting with the lower
    mean loss on its own, then to the lower index, so the tail of a list is still ordered. Greedy is not always the optimal subset for a given k, but every prefix is good, which
    is what a list tried in order needs.

    Args:
        losses: ``[num_tasks, num_settings]`` normalised final losses (NaN = worst).
        k: length of the ordering (default: every setting).

    Returns:
        ``[k]`` int setting indices.

    Raises:
        ValueError, TypeError: a bad table or ``k``.

    Example:
        >>> # setting 0 is best on average; setting 2 complements it on task 1 better than 1 does
        >>> greedy_order([[0.1, 0.2, 0.9], [0.6, 0.5, 0.0]], k=2).tolist()
        [0, 2]
    """
    table = _table("losses", losses)
    num = table.shape[1]
    if k is None:
        k = num
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num:
        raise ValueError(f"greedy_order: k={k!r} must be an integer in [1, {num}] (the number of settings).")
    best = np.full(table.shape[0], np.inf)
    chosen: list[int] = []
    available = np.ones(num, dtype=bool)
    huge = np.finfo(np.float64).max
    single = np.nan_to_num(table.mean(axis=0), posinf=huge)  # the tie-break
    for _ in range(int(k)):
        scores = np.minimum(best[:, None], table).mean(axis=0)  # inf only if some task is never finite
        scores = np.where(available, np.nan_to_num(scores, posinf=huge), np.inf)
        pick = int(np.lexsort((np.arange(num), single, scores))[0])
        chosen.append(pick)
        available[pick] = False
        best = np.minimum(best, table[:, pick])
    return np.asarray(chosen, dtype=np.int64)


def best_of_k(losses: Any, order: Sequence[int]) -> np.ndarray:
    """Mean over tasks of the best loss among the first k settings of ``order``, for every k.

    Example:
        >>> best_of_k([[0.1, 0.2, 0.9], [0.6, 0.5, 0.0]], [0, 2]).round(3).tolist()
        [0.35, 0.05]
    """
    table = _table("losses", losses)
    order = np.asarray(order, dtype=np.int64)
    if order.ndim != 1 or order.size == 0 or order.min() < 0 or order.max() >= table.shape[1]:
        raise ValueError(f"best_of_k: order must be setting indices in [0, {table.shape[1]}), got {order.tolist()}.")
    return np.minimum.accumulate(table[:, order], axis=1).mean(axis=0)


def _log_comb(n: int, r: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)


def expected_random_best_of_k(losses: Any, ks: Sequence[int]) -> np.ndarray:
    """Expected best-of-k of random search: k settings drawn without replacement, best kept.

    Exact: on a task with losses sorted ``v_1 <= ... <= v_N``, the best of a random k-subset is
    ``v_i`` with probability ``C(N - i, k - 1) / C(N, k)``; the result is the mean over tasks.

    Args:
        losses: ``[num_tasks, num_settings]`` (N settings, the pool random search draws from).
        ks: the subset sizes, each in ``[1, N]``.

    Returns:
        ``[len(ks)]`` expected mean best-of-k normalised loss.

    Example:
        >>> expected_random_best_of_k([[0.0, 1.0, 2.0]], [1, 2, 3]).round(4).tolist()
        [1.0, 0.3333, 0.0]
    """
    table = np.sort(_table("losses", losses), axis=1)
    num = table.shape[1]
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num:
            raise ValueError(f"expected_random_best_of_k: k={k!r} must be an integer in [1, {num}].")
        weights = np.array([math.exp(_log_comb(num - i, int(k) - 1) - _log_comb(num, int(k))) if num - i >= k - 1
                            else 0.0 for i in range(1, num + 1)])  # in logs: C(2000, 1000) overflows a float
        finite = np.where(np.isfinite(table), table, np.finfo(np.float64).max)
        out.append(float((finite @ weights).mean()))
    return np.asarray(out)


# -- the list file -----------------------------------------------------------------------


def _settings_digest(settings: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(list(settings), sort_keys=True).encode()).hexdigest()


def _check_setting(index: int, setting: Any, where: str) -> dict[str, Any]:
    space = search_space("nadamw")
    if not isinstance(setting, Mapping) or set(setting) != set(space):
        got = sorted(setting) if isinstance(setting, Mapping) else type(setting).__name__
        raise ValueError(f"{where}: setting {index} must have exactly the NAdamW hyperparameters "
                         f"{sorted(space)}, got {got}.")
    for name, value in setting.items():
        kind_ok = isinstance(value, bool) if name == "nesterov" else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        if not kind_ok:
            raise TypeError(f"{where}: setting {index} has {name}={value!r}; expected "
                            f"{'a bool' if name == 'nesterov' else 'a finite number'}.")
    try:
        nadamw(total_steps=1, **setting)  # NAdamW's own range checks
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: setting {index} is not a valid NAdamW setting: {err}") from None
    return dict(setting)


def save_opt_list(path: str | os.PathLike, settings: Sequence[Mapping[str, Any]],
                  info: Mapping[str, Any] | None = None) -> Path:
    """Writes an opt_list file: JSON with the ordered settings, their SHA-256 and ``info``.

    The write is atomic (a reader never sees half a file).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "my_list.json")
        >>> _ = save_opt_list(path, opt_list(2), {"note": "copy of the shipped list"})
        >>> load_opt_list(path)[0] == opt_list(2)
        True
    """
    checked = [_check_setting(i, s, "save_opt_list") for i, s in enumerate(settings)]
    if not checked:
        raise ValueError("save_opt_list: settings is empty; give at least one NAdamW setting.")
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "optimizer": "nadamw", "settings": checked,
           "settings_sha256": _settings_digest(checked), "info": dict(info or {})}
    path = Path(path)
    checkpoint.atomic_write(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return path


def _parse(text: str, where: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not an opt_list file (invalid JSON: {err}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{where} is not an opt_list file (format must be {FORMAT!r}).")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {doc['format_version']}, newer than this lopt reads "
                         f"({FORMAT_VERSION}); upgrade lopt.")
    settings = [_check_setting(i, s, where) for i, s in enumerate(doc.get("settings") or [])]
    if not settings:
        raise ValueError(f"{where} holds no settings.")
    if doc.get("settings_sha256") != _settings_digest(settings):
        raise ValueError(f"{where}: the settings do not match their SHA-256 (the file was edited or corrupted); "
                         "re-create it with lopt.optimizers.save_opt_list or `lopt optlist learn`.")
    return settings, dict(doc.get("info") or {})


def load_opt_list(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Reads an opt_list file, checking its format, every setting's range and the digest.

    Returns:
        ``(settings, info)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an opt_list file, a setting out of range, or a digest mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"opt_list file {str(path)!r} does not exist; write one with "
                                "`lopt optlist learn` or leave path=None for the shipped list.")
    return _parse(path.read_text(), str(path))


@lru_cache(maxsize=1)
def _shipped() -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    package, name = _PACKAGE_FILE
    text = resources.files(package).joinpath(name).read_text()
    settings, info = _parse(text, f"the shipped opt_list ({name})")
    return tuple(settings), info


def opt_list(k: int | None = None, *, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The first ``k`` NAdamW settings of lopt's learned list (or of the list file at ``path``).

    Each setting is a dict of :func:`lopt.optimizers.nadamw` hyperparameters; build one with
    ``lopt.optimizers.get("nadamw", total_steps=T, **setting)``. Try them in order on a new task
    and keep the best (per-task opt_list baseline, ``lopt eval --baselines opt_list_per_task``).

    Args:
        k: how many settings (default: the whole list).
        path: an opt_list file written by :func:`save_opt_list` / ``lopt optlist learn``.

    Raises:
        ValueError: ``k`` is not in ``[1, len(list)]``; a bad file.

    Example:
        >>> first = opt_list(1)[0]
        >>> 1e-5 <= first["learning_rate"] <= 1.0
        True
    """
    settings = list(_shipped()[0]) if path is None else load_opt_list(path)[0]
    if k is None:
        k = len(settings)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(settings):
        raise ValueError(f"opt_list: k={k!r} must be an integer in [1, {len(settings)}] (the list's length); "
                         "learn a longer list with `lopt optlist learn --list-size N`.")
    return [dict(s) for s in settings[: int(k)]]


def opt_list_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """How the list was learned: distribution, tasks, steps, and its held-out best-of-k curve.

    Example:
        >>> "heldout_best_of_k" in opt_list_info()
        True
    """
    return dict(_shipped()[1]) if path is None else load_opt_list(path)[1]
