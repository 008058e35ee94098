"""Resumable held-out measurements: ``--partial`` keeps finished tasks and refuses other settings."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import pretrained_heldout as bench
from heldout_partial import PartialResults

ARGS = ["--optax", "prodigy", "--tasks", "losg_rosenbrock", "quadratic_cond1e6_dim100", "--steps-scale", "0.002",
        "--seeds", "1", "--save-as", "heldout_partial_test"]


def read(path):
    with open(path) as f:
        return json.load(f)


def test_a_rerun_reads_finished_tasks_instead_of_training_them(tmp_path, monkeypatch):
    partial = str(tmp_path / "part.json")
    first = bench.main(ARGS + ["--partial", partial, "--out", str(tmp_path / "a")])
    assert [t["name"] for t in read(partial)["tasks"]] == ["losg_rosenbrock", "quadratic_cond1e6_dim100"]

    def no_training(*args, **kwargs):
        raise AssertionError("a task found in --partial was trained again")

    monkeypatch.setattr(bench, "train_task", no_training)
    second = bench.main(ARGS + ["--partial", partial, "--out", str(tmp_path / "b")])
    assert second["overall"] == first["overall"]
    assert [t["candidate_final_test"] for t in second["tasks"]] == [t["candidate_final_test"] for t in first["tasks"]]
    assert os.path.exists(tmp_path / "b" / "heldout_partial_test_cpu.json")


def test_a_cut_run_resumes_with_the_missing_task_only_and_names_every_device(tmp_path, monkeypatch):
    partial = str(tmp_path / "part.json")
    bench.main(ARGS[:4] + ARGS[5:] + ["--partial", partial, "--out", str(tmp_path)])  # rosenbrock only
    document = read(partial)
    assert document["tasks"][0]["device"] == "cpu" and "device" not in document["settings"]
    document["tasks"][0]["device"] = "gpu-elsewhere"  # as if that task had run on another machine
    with open(partial, "w") as f:
        json.dump(document, f)
    trained = []
    real = bench.train_task
    monkeypatch.setattr(bench, "train_task", lambda task, *a, **k: trained.append(task) or real(task, *a, **k))
    result = bench.main(ARGS + ["--partial", partial, "--out", str(tmp_path)])
    assert len(trained) == 1 and [t["name"] for t in result["tasks"]] == ["losg_rosenbrock", "quadratic_cond1e6_dim100"]
    assert result["devices"] == {"cpu": ["quadratic_cond1e6_dim100"], "gpu-elsewhere": ["losg_rosenbrock"]}
    assert os.path.exists(tmp_path / "heldout_partial_test_cpu+gpu-elsewhere.json")


def test_other_settings_are_refused_naming_what_differs(tmp_path):
    path = str(tmp_path / "part.json")
    PartialResults(path, {"candidate": "prodigy", "seeds": 1}).add({"name": "losg_rosenbrock"})
    with pytest.raises(ValueError, match="seeds: file 1, this run 3"):
        PartialResults(path, {"candidate": "prodigy", "seeds": 3})
    with pytest.raises(ValueError, match="already in"):
        PartialResults(path, {"candidate": "prodigy", "seeds": 1}).add({"name": "losg_rosenbrock"})


def test_a_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"tasks": []}))
    with pytest.raises(ValueError, match="not a held-out partial-results file"):
        PartialResults(str(path), {"seeds": 1})
