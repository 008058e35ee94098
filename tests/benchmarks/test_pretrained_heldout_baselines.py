"""``--baselines``: Adam's grid runs read from an earlier run give the same results as training them."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import pretrained_heldout as bench

TASKS = ["--tasks", "losg_rosenbrock", "quadratic_cond1e6_dim100", "--steps-scale", "0.002", "--seeds", "1"]


def run(tmp_path, candidate, name, *extra):
    return bench.main(["--optax", candidate, *TASKS, "--out", str(tmp_path), "--save-as", name, *extra])


def rerun_with_edited_baselines(tmp_path, monkeypatch, earlier, edit):
    """Edits the results file ``earlier`` in place, then runs a second candidate with it as --baselines.

    Returns the result and the tasks whose Adam runs were trained again.
    """
    with open(earlier) as f:
        document = json.load(f)
    edit(document)
    with open(earlier, "w") as f:
        json.dump(document, f)
    trained = []
    real = bench.train_adam
    def counted(task, num_steps, eval_every, *a, **k):
        if num_steps > bench.CHECK_EVALUATIONS * eval_every:  # a check trains only the first evaluations
            trained.append(task)
        return real(task, num_steps, eval_every, *a, **k)

    monkeypatch.setattr(bench, "train_adam", counted)
    return run(tmp_path, "dog", "second", "--baselines", earlier), trained


def test_reused_adam_runs_give_the_results_of_training_them(tmp_path, monkeypatch):
    run(tmp_path, "prodigy", "first")
    full = run(tmp_path, "dog", "full")  # the second candidate, Adam trained again

    def no_adam(*args, **kwargs):
        raise AssertionError("Adam was trained although --baselines holds its runs")

    monkeypatch.setattr(bench, "train_adam", no_adam)
    earlier = str(tmp_path / "first_cpu.json")
    reused = run(tmp_path, "dog", "reused", "--baselines", earlier)
    assert reused["overall"] == full["overall"]
    for got, want in zip(reused["tasks"], full["tasks"]):
        assert got.pop("adam_from") == earlier
        for record in (got, want):
            record.pop("seconds")
        assert got == want


def test_a_file_of_other_settings_is_refused_and_another_device_retrains(tmp_path, monkeypatch):
    run(tmp_path, "prodigy", "first")
    earlier = str(tmp_path / "first_cpu.json")
    with pytest.raises(ValueError, match="--seeds 1 --steps-scale 0.002; this run uses --seeds 2"):
        bench.main(["--optax", "dog", *TASKS[:-1], "2", "--out", str(tmp_path), "--baselines", earlier])

    def elsewhere(document):
        document["tasks"][0]["device"] = "gpu-elsewhere"

    result, trained = rerun_with_edited_baselines(tmp_path, monkeypatch, earlier, elsewhere)
    assert len(trained) == 1  # Rosenbrock's Adam was measured elsewhere: trained here again
    assert "adam_from" not in result["tasks"][0] and result["tasks"][1]["adam_from"] == earlier


def test_a_file_that_is_not_the_benchmarks_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a results or --partial file"):
        run(tmp_path, "dog", "x", "--baselines", str(path))


def test_adam_runs_of_other_code_are_checked_then_reused_or_trained_again(tmp_path, monkeypatch):
    first = run(tmp_path, "prodigy", "first")
    assert all(len(t["adam_code"]) == 16 for t in first["tasks"])
    earlier = str(tmp_path / "first_cpu.json")

    def other_code(document):
        document["tasks"][0]["adam_code"] = "0" * 16  # as if the task code had changed since
        del document["tasks"][1]["adam_code"]  # a record from before the fingerprint: reused

    result, trained = rerun_with_edited_baselines(tmp_path, monkeypatch, earlier, other_code)
    assert trained == []  # the grid's first steps, trained again, reproduce the stored curves: reused
    check = result["tasks"][0]["adam_checked"]
    assert check["stored_code"] == "0" * 16 and check["max_relative_difference"] == 0.0
    assert result["tasks"][0]["adam_from"] == earlier
    assert result["tasks"][0]["adam_code"] == first["tasks"][0]["adam_code"]  # this code's, checked
    assert result["tasks"][1]["adam_from"] == earlier and result["tasks"][1]["adam_code"] is None
    assert "adam_checked" not in result["tasks"][1]

    def other_runs(document):  # other code whose first steps differ at one learning rate: not the same runs
        task = document["tasks"][0]
        task["adam_code"] = "0" * 16
        task["test_curves"]["lr_3"][1] *= 1.0001

    result, trained = rerun_with_edited_baselines(tmp_path, monkeypatch, earlier, other_runs)
    assert len(trained) == 1 and "adam_from" not in result["tasks"][0]
    assert result["tasks"][0]["adam_code"] == first["tasks"][0]["adam_code"]
    assert result["tasks"][0]["grid_final_test"] == first["tasks"][0]["grid_final_test"]


def test_reproduces_compares_every_evaluation():
    import heldout_baselines

    assert heldout_baselines.reproduces([3.0, 1.0], [3.0, 1.0]) == (True, 0.0)
    same, difference = heldout_baselines.reproduces([3.0, 1.0], [3.0, 1.001])
    assert not same and difference == pytest.approx(1e-3)
    assert heldout_baselines.reproduces([3.0, 1.0], [3.0]) == (False, float("inf"))
    assert heldout_baselines.reproduces([3.0, float("nan")], [3.0, 1.0]) == (False, float("inf"))
    assert heldout_baselines.reproduces([3.0, float("nan")], [3.0, float("nan")]) == (True, 0.0)
