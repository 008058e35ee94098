"""`lopt train` on a CPU splits its tasks over one host device per core (lopt.cli.host_devices)."""

import os
import subprocess
import sys

import pytest

from lopt.cli.host_devices import (
    HOST_DEVICES_ENV,
    MAX_AUTO_DEVICES,
    host_device_count,
    use_host_cores,
)

SMALL_RUN = ["task.family=quadratic", 'task.config={"dim": 6}', "lopt.name=learnable_sgdm", "estimator.unroll_length=5",
             "truncation.horizon=10", "normalizer.enabled=false", "final_eval.enabled=false", "trainer.eval_every=0",
             "trainer.outer_steps=2"]


def test_count_follows_the_setting_and_the_cores():
    assert host_device_count({}, cores=2) == 2
    assert host_device_count({HOST_DEVICES_ENV: "auto"}, cores=64) == MAX_AUTO_DEVICES
    assert host_device_count({HOST_DEVICES_ENV: " AUTO "}, cores=1) == 1
    assert host_device_count({HOST_DEVICES_ENV: "3"}, cores=2) == 3
    assert host_device_count({HOST_DEVICES_ENV: "1"}, cores=16) == 1
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(ValueError, match=rf"{HOST_DEVICES_ENV}='{bad}' must be 'auto' or a positive integer"):
            host_device_count({HOST_DEVICES_ENV: bad})


def test_nothing_changes_once_jax_has_started():
    import jax

    jax.devices()  # this test process's backends are up
    assert use_host_cores({HOST_DEVICES_ENV: "4"}) is None
    assert use_host_cores({HOST_DEVICES_ENV: "4", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}) is None


def _train(tmp_path, name, host_devices, num_tasks):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", HOST_DEVICES_ENV: host_devices}
    env.pop("XLA_FLAGS", None)
    argv = [sys.executable, "-m", "lopt.cli", "train", "--out", str(tmp_path / name), "--no-progress",
            "--set", f"estimator.num_tasks={num_tasks}"]
    for setting in SMALL_RUN:
        argv += ["--set", setting]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lopt_train_splits_the_tasks_over_host_devices(tmp_path):
    assert "note: the 4 tasks are split over 2 cpu devices" in _train(tmp_path, "split", "2", 4)
    uneven = _train(tmp_path, "uneven", "2", 3)
    assert "note: 2 cpu devices, but estimator.num_tasks=3 does not split evenly over them: running on one" in uneven
    assert "cpu devices" not in _train(tmp_path, "one", "1", 4)
