"""Which evaluated runs blew up or diverged, for the report: per task and optimizer, seeds counted.

A seed *diverged* when its training loss became non-finite; it *blew up* when it stayed finite
but ended far above where it started (:meth:`lopt.inner.Curves.blew_up`, the rule ``lopt run``
and ``train_many`` use: final loss above ``BLOW_UP_FACTOR`` times the initial one). The report
marks such cells and lists them; ``stability.json`` holds the same records.

Example:
    >>> import numpy as np
    >>> from lopt.evaluate.results import Run
    >>> rising = np.array([[1.0, 2.0, 40.0, 50.0], [1.0, 0.5, 0.4, 0.3]])  # seed 0 ends 50x above its start
    >>> evals = np.array([[1.0, 1.0], [1.0, 0.3]])
    >>> run_stability(Run(np.array([0, 1]), rising, np.array([0, 4]), evals, evals, evals, evals))
    {'seeds': 2, 'blew_up': 1, 'diverged': 0}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lopt.inner import BLOW_UP_FACTOR, Curves

__all__ = ["markdown_lines", "run_stability", "stability_records", "write_stability"]

STABILITY_NAME = "stability.json"


def run_stability(run: Any, tail: int = 10) -> dict[str, int]:
    """Seeds of one run (``lopt.evaluate.results.Run``) that blew up or diverged.

    Returns:
        ``{"seeds": S, "blew_up": b, "diverged": d}``.
    """
    train = np.asarray(run.train_loss, np.float32)
    diverged = ~np.isfinite(train).all(axis=1)
    curves = Curves(train_loss=train, eval_steps=np.asarray(run.eval_steps), valid_loss=np.asarray(run.valid_loss),
                    valid_accuracy=np.asarray(run.valid_accuracy), test_loss=np.asarray(run.test_loss),
                    test_accuracy=np.asarray(run.test_accuracy), diverged=diverged,
                    diverged_step=np.full(diverged.shape, -1))
    blew_up = np.asarray(curves.blew_up(tail=tail)) & ~diverged
    return {"seeds": int(train.shape[0]), "blew_up": int(blew_up.sum()), "diverged": int(diverged.sum())}


def stability_records(summary: Any) -> list[dict[str, Any]]:
    """One record per task and optimizer (candidates, and each baseline's chosen run) with unstable seeds.

    Args:
        summary: a :class:`lopt.evaluate.analysis.Summary`.

    Returns:
        ``[{"task", "optimizer", "seeds", "blew_up", "diverged"}]``, in report order.
    """
    records = []
    for task in summary.tasks:
        for name in summary.names:
            counts = run_stability(task.runs[name])
            if counts["blew_up"] or counts["diverged"]:
                records.append({"task": task.task.label, "optimizer": name, **counts})
    return records


def write_stability(summary: Any, out: str | os.PathLike) -> tuple[Path, list[dict[str, Any]]]:
    """Writes ``stability.json`` (the records, their count, the rule) into ``out``.

    Returns:
        The path and the records.
    """
    records = stability_records(summary)
    runs = len(summary.tasks) * len(summary.names)
    path = Path(out) / STABILITY_NAME
    path.write_text(json.dumps({
        "rule": (f"diverged: a non-finite training loss; blew up: finite but the final loss (mean of the last 10 "
                 f"finite training losses, or the final validation loss) above {BLOW_UP_FACTOR:g}x the initial one"),
        "runs": runs, "unstable_runs": len(records), "records": records}, indent=2) + "\n")
    return path, records


def markdown_lines(records: list[dict[str, Any]], runs: int) -> list[str]:
    """The report's "Stability" section."""
    lines = ["## Stability", ""]
    if not records:
        return lines + [(f"No run blew up or diverged ({runs} task x optimizer runs checked; blow-up: final loss "
                         f"above {BLOW_UP_FACTOR:g}x the initial one, `lopt.inner.Curves.blew_up`)."), ""]
    lines += [(f"**{len(records)} of {runs} task x optimizer runs blew up or diverged** on at least one seed (blow-up: "
               f"finite, but the final loss above {BLOW_UP_FACTOR:g}x the initial one; diverged: a non-finite loss). "
               "Their cells are marked ⚠ below; `stability.json` lists them."), "",
              "| task | optimizer | blew up | diverged |", "|---|---|---|---|"]
    lines += [(f"| {r['task']} | `{r['optimizer']}` | {r['blew_up']}/{r['seeds']} seeds | "
               f"{r['diverged']}/{r['seeds']} seeds |") for r in records]
    return lines + [""]
