"""MetricsLog: JSON Lines round trip, non-finite values, resume truncation, crash leftovers."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.meta.metrics_log import MetricsLog, read_metrics


def test_round_trip_converts_jax_and_numpy_values(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    log = MetricsLog(path)
    record = log.write(1, {"loss": jnp.float32(0.5), "count": np.int64(3), "ok": np.bool_(True),
                           "per_task": jnp.array([1.0, 2.0]), "name": "es", "none": None,
                           "nested": {"a": [jnp.int32(1), 2.5]}})
    log.write(np.int32(2), {"loss": 0.25})
    assert len(path.read_text().splitlines()) == 2  # every line is on disk once written
    assert record == {"step": 1, "loss": 0.5, "count": 3, "ok": True, "per_task": [1.0, 2.0],
                      "name": "es", "none": None, "nested": {"a": [1, 2.5]}}
    assert read_metrics(path) == [record, {"step": 2, "loss": 0.25}]
    assert type(read_metrics(path)[1]["step"]) is int


def test_non_finite_values_are_written_as_strings_and_read_back_as_floats(tmp_path):
    path = tmp_path / "m.jsonl"
    MetricsLog(path).write(0, {"nan": float("nan"), "inf": jnp.inf, "ninf": np.float32(-np.inf),
                               "arr": jnp.array([1.0, jnp.nan])})
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    line = json.loads(path.read_text(), parse_constant=reject)  # strict JSON: no bare NaN tokens
    assert line == {"step": 0, "nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "arr": [1.0, "NaN"]}
    (record,) = read_metrics(path)
    assert math.isnan(record["nan"]) and record["inf"] == math.inf and record["ninf"] == -math.inf
    assert record["arr"][0] == 1.0 and math.isnan(record["arr"][1])


def test_truncate_after_drops_lines_written_after_the_checkpoint(tmp_path):
    path = tmp_path / "m.jsonl"
    log = MetricsLog(path)
    for step in range(1, 8):
        log.write(step, {"loss": 1.0 / step})
    # The run is killed; it resumes from the checkpoint of step 4 and continues.
    resumed = MetricsLog(path)
    assert resumed.truncate_after(4) == 3
    for step in range(5, 7):
        resumed.write(step, {"loss": -1.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]
    assert read_metrics(path)[-1]["loss"] == -1.0
    fresh = MetricsLog(tmp_path / "new" / "missing.jsonl")
    assert fresh.truncate_after(3) == 0 and not fresh.path.exists()
    fresh.write(4, {})
    assert read_metrics(fresh.path) == [{"step": 4}]


def test_line_cut_short_by_a_crash_is_dropped(tmp_path):
    path = tmp_path / "m.jsonl"
    MetricsLog(path).write(1, {"loss": 1.0})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    with pytest.warns(RuntimeWarning, match=r"skipped unreadable line\(s\) \[2\]"):
        assert [r["step"] for r in read_metrics(path)] == [1]
    log = MetricsLog(path)
    with pytest.warns(RuntimeWarning, match="dropping an incomplete last line"):
        log.write(2, {"loss": 0.5})
    log.write(3, {"loss": 0.25})  # checked once per log
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_bad_values_name_the_problem(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    with pytest.raises(TypeError, match="'obj' has type object"):
        log.write(1, {"obj": object()})
    with pytest.raises(ValueError, match="'step' is reserved"):
        log.write(1, {"step": 3})
    with pytest.raises(ValueError, match="step=-1 must be a non-negative integer"):
        log.write(-1, {})
    with pytest.raises(TypeError, match="is a PRNG key"):
        log.write(1, {"key": jax.random.key(0)})
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "nothing.jsonl")
    assert not (tmp_path / "m.jsonl").exists()
