"""Candidates side by side on the held-out suite, from ``benchmarks/pretrained_heldout.py`` result files.

Prints each task's final test loss (mean over seeds) for every file and the three Adam baselines of
the first, then, for each later file against the first, the paired difference of the per-task
normalised test loss (1 = the initial loss, 0 = the best Adam grid point): its mean over the tasks
both files hold, the standard error of that mean, and on how many tasks each side ends lower.

Runs compare only on one machine: XLA compiles CPU programs for the host's instruction set and small
networks trained on minibatches amplify last-bit differences (the shipped weights' normalised loss
moved by 4e-4 between stop 51's machine and stop 65's, as much as the candidates differ), while a
rerun on the same machine reproduces every loss exactly.

Usage:
    python benchmarks/heldout_compare.py BASE.json OTHER.json [MORE.json ...] [--out FILE.txt]

Example:
    >>> base = {"candidate": "a", "tasks": [{"name": "t", "candidate_final_test": 1.0, "candidate_normalized_test": 0.1}]}
    >>> other = {"candidate": "b", "tasks": [{"name": "t", "candidate_final_test": 0.9, "candidate_normalized_test": 0.05}]}
    >>> row = paired(base, other)
    >>> round(row["mean"], 3), row["lower"], row["higher"], row["tasks"]
    (-0.05, 1, 0, 1)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

BASELINES = ("adam_default", "adam_suite", "adam_per_task")


def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["name"]: task for task in results["tasks"]}


def paired(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``other``'s normalised test loss minus ``base``'s over the tasks both hold: mean, standard
    error (``nan`` for one task), tasks where ``other`` ends lower / higher, and the task count."""
    a, b = _by_name(base), _by_name(other)
    common = [name for name in a if name in b]
    if not common:
        raise ValueError(f"heldout_compare: {other.get('candidate')!r} and {base.get('candidate')!r} share no task; "
                         "compare runs of the same suite.")
    diffs = [b[n]["candidate_normalized_test"] - a[n]["candidate_normalized_test"] for n in common]
    mean = sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) if len(diffs) > 1 else math.nan
    return {"mean": mean, "stderr": spread, "lower": sum(d < 0 for d in diffs), "higher": sum(d > 0 for d in diffs),
            "tasks": len(common)}


def table(runs: list[dict[str, Any]]) -> str:
    """The per-task table and the paired rows, as text."""
    names = [str(run.get("candidate", f"run {i}")) for i, run in enumerate(runs)]
    first = _by_name(runs[0])
    others = [_by_name(run) for run in runs]
    lines = [f"{'task':34s}" + "".join(f"{n[:15]:>16s}" for n in names) + "".join(f"{b:>14s}" for b in BASELINES)]
    for name, task in first.items():
        values = [o[name]["candidate_final_test"] if name in o else math.nan for o in others]
        adam = [task["baselines"][b]["final_test"] if "baselines" in task else math.nan for b in BASELINES]
        lines.append(f"{name:34s}" + "".join(f"{v:16.5g}" for v in values) + "".join(f"{v:14.5g}" for v in adam))
    for name, run in zip(names[1:], runs[1:]):
        row = paired(runs[0], run)
        lines.append(f"{name} - {names[0]}: mean normalised difference {row['mean']:+.5f} ± {row['stderr']:.5f} "
                     f"over {row['tasks']} tasks; lower on {row['lower']}, higher on {row['higher']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="results JSON of benchmarks/pretrained_heldout.py; the first is the base")
    parser.add_argument("--out", help="also write the table to this text file (refused if it exists)")
    args = parser.parse_args(argv)
    if len(args.files) < 2:
        parser.error(f"give at least two results files; got {args.files}")
    if args.out and os.path.exists(args.out):
        parser.error(f"--out={args.out!r} exists; choose a new file (a result is never overwritten)")
    runs = []
    for path in args.files:
        with open(path) as f:
            runs.append(json.load(f))
    text = table(runs)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
