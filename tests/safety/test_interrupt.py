"""Ctrl-C (SIGINT) and SIGTERM during meta-training: the last completed outer step is checkpointed,
the resume command is printed, the exit status is non-zero, and ``--resume`` continues exactly.

The run is the tiny quadratic config of test_run_directory with checkpoints far apart, so the only
checkpoint the interrupted run can hold is the one written on the signal.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lopt
from lopt.meta.interrupts import GracefulStop, TrainingInterrupted
from lopt.meta.run_directory import latest_checkpoint_step
from lopt.meta.trainer import MetaTrainer

from .test_run_directory import SETTINGS, cli, config, steps_logged, theta_of

#: ``lopt`` with Ctrl-C enabled even when pytest runs in the background of a shell (which ignores SIGINT).
LOPT = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from lopt.cli import main; sys.exit(main(sys.argv[1:]))")
FAR_APART = ["trainer.checkpoint_every=1000000", "trainer.outer_steps=1000000"]


def wait_for_steps(metrics, count, process=None, timeout=120.0):
    """Polls ``metrics.jsonl`` until it holds ``count`` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"lopt train ended early: {process.communicate()}")
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{metrics} did not reach {count} steps in {timeout} s")


def assert_resumes_exactly(out, step, tmp_path):
    """Resuming to ``step + 2`` reproduces an uninterrupted run of ``step + 2`` outer steps bit for bit."""
    assert cli("--out", str(out), "--resume", "--set", f"trainer.outer_steps={step + 2}") == 0
    reference = tmp_path / "reference"
    MetaTrainer(config(step + 2), reference, progress=False).run()
    for a, b in zip(theta_of(out), theta_of(reference)):
        np.testing.assert_array_equal(a, b)
    assert steps_logged(out) == list(range(1, step + 3))


def test_ctrl_c_checkpoints_the_last_step_prints_the_resume_command_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-c", LOPT, "train", "quickstart", "--out", str(out), "--no-progress"]
    for setting in [*SETTINGS, *FAR_APART]:
        argv += ["--set", setting]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_steps(out / "metrics.jsonl", 3, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert f"continue with `lopt train --out {out} --resume`" in err
    logged = steps_logged(out)
    step = latest_checkpoint_step(out)
    assert step is not None and step >= 3
    assert logged == list(range(1, step + 1))  # the checkpoint holds the last step logged
    assert f"saved a checkpoint of outer step {step}" in err
    assert_resumes_exactly(out, step, tmp_path)


def test_sigterm_in_process_raises_training_interrupted_after_checkpointing(tmp_path):
    out = tmp_path / "run"
    cfg = lopt.meta.load_config("quickstart", [*SETTINGS, *FAR_APART])
    sender = threading.Thread(target=lambda: (wait_for_steps(out / "metrics.jsonl", 3),
                                              os.kill(os.getpid(), signal.SIGTERM)))
    sender.start()
    with pytest.raises(TrainingInterrupted) as caught:
        MetaTrainer(cfg, out, progress=False).run()
    sender.join()
    err = caught.value
    assert err.signum == signal.SIGTERM and err.exit_status == 143
    assert latest_checkpoint_step(out) == err.step == steps_logged(out)[-1]
    assert f"lopt train --out {out} --resume" in str(err)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    assert_resumes_exactly(out, err.step, tmp_path)


def test_a_second_signal_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:  # pytest in the background of a non-interactive shell
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    signal.signal(signal.SIGINT, before)


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signal is None
    finally:
        signal.signal(signal.SIGTERM, before)
