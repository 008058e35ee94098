"""Benchmark results are never overwritten: a default path that holds a result gets a new name."""

import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import common


def test_free_path_returns_the_path_itself_when_nothing_is_there(tmp_path):
    assert common.free_path(str(tmp_path / "r.json")) == str(tmp_path / "r.json")


def test_free_path_counts_past_every_taken_name(tmp_path):
    for name in ("r.json", "r-2.json", "r-3.json"):
        (tmp_path / name).write_text("{}")
    assert common.free_path(str(tmp_path / "r.json")) == str(tmp_path / "r-4.json")


def test_save_twice_to_the_default_keeps_the_first_result(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(common, "device_tag", lambda: "dev")
    first = common.save("bench", {"rows": [1]})
    second = common.save("bench", {"rows": [2]})
    assert first == str(tmp_path / "bench_dev.json")
    assert second == str(tmp_path / "bench_dev-2.json")
    assert json.loads(pathlib.Path(first).read_text())["rows"] == [1]
    assert json.loads(pathlib.Path(second).read_text())["rows"] == [2]


def test_a_path_resolved_once_takes_every_partial_write(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(common, "device_tag", lambda: "dev")
    (tmp_path / "bench_dev.json").write_text('{"old": true}')
    path = common.default_path("bench")
    for rows in ([1], [1, 2]):
        common.save("bench", {"rows": rows}, path)
    assert json.loads((tmp_path / "bench_dev.json").read_text()) == {"old": True}
    assert json.loads(pathlib.Path(path).read_text())["rows"] == [1, 2]
    assert sorted(os.listdir(tmp_path)) == ["bench_dev-2.json", "bench_dev.json"]
