"""Multi-process meta-training: two CPU processes follow the one-process trajectory; only process 0's folder is the run."""

import doctest
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file

from lopt.meta import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_docstring_examples_run():
    result = doctest.testmod(distributed, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_environment_describes_the_process_group():
    env = {"LOPT_COORDINATOR": "localhost:8476", "LOPT_NUM_PROCESSES": "4", "LOPT_PROCESS_ID": "3"}
    assert distributed.resolve(env) == distributed.ProcessGroup("localhost:8476", 4, 3)
    assert distributed.resolve({}) is None
    assert distributed.resolve({"LOPT_COORDINATOR": "auto"}).coordinator == "auto"


@pytest.mark.parametrize("env, match", [
    ({"LOPT_COORDINATOR": "localhost"}, "must be host:port"),
    ({"LOPT_COORDINATOR": "localhost:99999", "LOPT_NUM_PROCESSES": "2", "LOPT_PROCESS_ID": "0"}, "host:port"),
    ({"LOPT_COORDINATOR": "localhost:8476", "LOPT_PROCESS_ID": "0"}, "LOPT_NUM_PROCESSES is not"),
    ({"LOPT_COORDINATOR": "localhost:8476", "LOPT_NUM_PROCESSES": "two", "LOPT_PROCESS_ID": "0"}, "not an integer"),
    ({"LOPT_COORDINATOR": "localhost:8476", "LOPT_NUM_PROCESSES": "2", "LOPT_PROCESS_ID": "2"}, r"in 0\.\.1"),
    ({"LOPT_COORDINATOR": "localhost:8476", "LOPT_NUM_PROCESSES": "0", "LOPT_PROCESS_ID": "0"}, "at least 1"),
    ({"LOPT_PROCESS_ID": "1"}, "LOPT_COORDINATOR is not"),
])
def test_bad_launch_settings_name_the_fix(env, match):
    with pytest.raises(ValueError, match=match):
        distributed.resolve(env)


def test_each_process_has_its_own_folder():
    assert distributed.process_out_dir("runs/a", process_index=0) == "runs/a"
    assert distributed.process_out_dir("runs/a/", process_index=2) == "runs/a.process-2"
    assert distributed.process_out_dir("runs/a.process-2", process_index=2) == "runs/a.process-2"  # idempotent
    assert distributed.agree([True, 0, 2]) == [1, 0, 2]  # one process: its own values


_RUN = textwrap.dedent("""
    import sys, lopt
    from lopt.meta.trainer import MetaTrainer
    cfg = lopt.meta.load_config("taskset", [
        'task.mixture={"quadratic": 1, "losg": 1}', "task.num_buckets=2", "task.configs_per_bucket=2",
        "task.redraw_every=2", "task.heldout_per_bucket=1", "lopt.name=learnable_sgdm", 'lopt.config={"lr": 0.05}',
        "estimator.num_tasks=4", "estimator.std=0.05", "estimator.unroll_length=5", "truncation.kind=constant",
        "truncation.horizon=10", "normalizer.num_steps=10", "trainer.eval_every=2", "trainer.eval_steps=10",
        "trainer.outer_steps=4", "trainer.checkpoint_every=2"])
    out = sys.argv[1]
    if len(sys.argv) > 2:  # the two-process run stops at step 2 and resumes from its checkpoint
        MetaTrainer(cfg, out, progress=False).run(stop_after=2)
        result = MetaTrainer(cfg, out, progress=False).run(resume=True)
    else:
        result = MetaTrainer(cfg, out, progress=False).run()
    import jax
    print("RUN-OK", jax.process_index(), jax.device_count(), result["step"])
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(out, devices: int, *args: str, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPT_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return subprocess.Popen([sys.executable, "-c", _RUN, str(out), *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


@pytest.mark.slow
def test_two_processes_follow_the_one_process_trajectory(tmp_path):
    """2 processes x 2 CPU devices == 1 process x 4 devices: theta, checkpoints, metrics; process 1 never writes the run."""
    group = {"LOPT_COORDINATOR": f"localhost:{_free_port()}", "LOPT_NUM_PROCESSES": "2"}
    procs = [_launch(tmp_path / "one", 4),
             _launch(tmp_path / "two", 2, "resume", LOPT_PROCESS_ID="0", **group),
             _launch(tmp_path / "two", 2, "resume", LOPT_PROCESS_ID="1", **group)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for i, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0 and "RUN-OK" in output, f"process {i}:\n{output[-4000:]}"
    assert "RUN-OK 1 4 4" in outputs[2]  # process 1 of a 4-device group ran to step 4

    one, two, worker = tmp_path / "one", tmp_path / "two", tmp_path / "two.process-1"
    assert sorted(os.listdir(tmp_path)) == ["one", "two", "two.process-1"]
    assert _files(two) == _files(one)  # process 0 writes exactly what a one-process run writes
    for folder in (two, worker):
        a, b = load_file(one / "theta.safetensors"), load_file(folder / "theta.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # the checkpoint gathers the task-sharded PES state of both processes into one file
    ckpt = "checkpoints/ckpt_00000004.safetensors"
    a, b = load_file(one / ckpt), load_file(two / ckpt)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["meta_loss"] for r in rows], [r["meta_loss"] for r in reference], rtol=1e-5)
