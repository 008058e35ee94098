"""The held-out comparison tool: paired per-task differences computed by hand, bad input refused."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import heldout_compare as compare


def _run(name, normalised, final=None):
    return {"candidate": name, "tasks": [
        {"name": task, "candidate_normalized_test": v, "candidate_final_test": (final or {}).get(task, 1.0 + v),
         "baselines": {b: {"final_test": 2.0} for b in compare.BASELINES}} for task, v in normalised.items()]}


def test_paired_difference_mean_and_standard_error():
    base = _run("base", {"a": 0.10, "b": 0.20, "c": 0.30, "only_base": 0.5})
    other = _run("other", {"a": 0.05, "b": 0.25, "c": 0.20})
    row = compare.paired(base, other)
    diffs = [-0.05, 0.05, -0.10]  # over the three shared tasks
    mean = sum(diffs) / 3
    assert row["tasks"] == 3 and row["lower"] == 2 and row["higher"] == 1
    assert row["mean"] == pytest.approx(mean)
    assert row["stderr"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3))


def test_disjoint_runs_are_refused():
    with pytest.raises(ValueError, match="share no task"):
        compare.paired(_run("x", {"a": 0.1}), _run("y", {"b": 0.1}))


def test_command_line_prints_and_writes_without_overwriting(tmp_path, capsys):
    paths = []
    for name, values in (("base", {"a": 0.1, "b": 0.2}), ("other", {"a": 0.0, "b": 0.1})):
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump(_run(name, values), f)
    out = str(tmp_path / "table.txt")
    assert compare.main([*paths, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "other - base: mean normalised difference -0.10000 ± 0.00000 over 2 tasks; lower on 2, higher on 0" in printed
    with open(out) as f:
        assert f.read().strip() == printed.strip()
    with pytest.raises(SystemExit):
        compare.main([*paths, "--out", out])  # exists: refused
    with pytest.raises(SystemExit):
        compare.main(paths[:1])  # one file: nothing to compare
