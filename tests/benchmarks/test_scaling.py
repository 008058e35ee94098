"""The multi-device scaling benchmark: its arithmetic, its children's environments, its refusals."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import scaling


def test_efficiency_is_rate_over_devices_times_the_one_device_rate_per_config():
    rows = [{"config": "canonical", "devices": 1, "inner_steps_per_s": 1000.0},
            {"config": "canonical", "devices": 4, "inner_steps_per_s": 3000.0},
            {"config": "mixture", "devices": 1, "inner_steps_per_s": 10.0},
            {"config": "mixture", "devices": 2, "inner_steps_per_s": 20.0},
            {"config": "orphan", "devices": 2, "inner_steps_per_s": 5.0}]
    scaling.efficiencies(rows)
    assert [r.get("efficiency") for r in rows] == [1.0, 0.75, 1.0, 1.0, None]


def test_trajectory_difference_measures_max_abs_and_relative_l2():
    a = [np.array([1.0, 2.0]), np.array([[3.0]])]
    b = [np.array([1.0, 2.5]), np.array([[3.0]])]
    diff = scaling.trajectory_difference(a, b)
    assert diff["max_abs"] == pytest.approx(0.5)
    assert diff["rel_l2"] == pytest.approx(0.5 / np.sqrt(1 + 2.5**2 + 9))
    with pytest.raises(ValueError, match="sizes differ"):
        scaling.trajectory_difference(a, [np.ones(2)])


def test_children_see_the_requested_devices_and_nothing_else_changes(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=7 --xla_cpu_foo=1")
    cpu = scaling.child_env("cpu", 4)
    assert cpu["XLA_FLAGS"].split() == ["--xla_cpu_foo=1", "--xla_force_host_platform_device_count=4"]
    assert cpu["JAX_PLATFORMS"] == "cpu" and cpu["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    gpu = scaling.child_env("gpu", 3)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0,1,2"


def test_children_write_their_own_files_not_the_parents_out():
    assert scaling._strip_out(["--devices", "1", "2", "--out", "x.json", "--steps", "3", "--out=y"]) == [
        "--devices", "1", "2", "--steps", "3"]


@pytest.mark.parametrize("argv, message", [
    (["--devices", "2", "4"], "1 must be among them"),
    (["--devices", "1", "4", "--trajectory-tasks", "6"], "divide evenly over 4"),
])
def test_bad_settings_stop_before_any_child_runs(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        scaling.main(argv + ["--platform", "cpu", "--out", str(tmp_path / "s.json")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_an_existing_result_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "s.json"
    out.write_text(json.dumps({"keep": True}))
    with pytest.raises(SystemExit):
        scaling.main(["--devices", "1", "2", "--platform", "cpu", "--out", str(out)])
    assert "exists" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"keep": True}
