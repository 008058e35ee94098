"""Meta-trainer reliability: exact resumption, corrupted checkpoints, diverging tasks, configs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import lopt
from lopt.meta.config import MetaTrainConfig, load_config
from lopt.meta.trainer import MetaTrainer
from lopt.meta.warm_start import load_warm_start


def small_config(**changes) -> MetaTrainConfig:
    cfg = MetaTrainConfig.from_dict({
        "name": "test", "seed": 3,
        "task": {"family": "quadratic", "config": {"dim": 8, "condition_number": 20.0}},
        "lopt": {"name": "learnable_sgdm", "config": {"lr": 0.05}},
        "estimator": {"kind": "pes", "num_tasks": 4, "std": 0.05, "unroll_length": 5},
        "truncation": {"kind": "constant", "horizon": 20},
        "normalizer": {"enabled": False},
        "outer": {"learning_rate": 0.05},
        "trainer": {"outer_steps": 12, "eval_every": 6, "eval_tasks": 2, "eval_steps": 20,
                    "checkpoint_every": 4, "checkpoint_minutes": 100.0},
        "final_eval": {"enabled": False},
    })
    return MetaTrainConfig.from_dict({**cfg.to_dict(), **changes}) if changes else cfg


def leaves(theta):
    return [np.asarray(x) for x in jax.tree.leaves(theta)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return MetaTrainer(small_config(), out, progress=False).run(), out


def test_run_writes_outputs_and_improves(uninterrupted):
    result, out = uninterrupted
    assert {"config.json", "metrics.jsonl", "eval.jsonl", "theta.safetensors", "checkpoints"} <= set(os.listdir(out))
    rows = lopt.meta.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all(np.isfinite(x).all() for x in leaves(result["theta"]))
    theta, lopt_ = lopt.learned.load_theta(out / "theta.safetensors")
    assert lopt_.name == "learnable_sgdm"
    np.testing.assert_array_equal(leaves(theta), leaves(result["theta"]))
    assert len(lopt.meta.read_metrics(out / "eval.jsonl")) == 2


def test_interrupted_and_resumed_run_matches_uninterrupted(uninterrupted, tmp_path):
    full, _ = uninterrupted
    MetaTrainer(small_config(), tmp_path, progress=False).run(stop_after=6)
    resumed = MetaTrainer(small_config(), tmp_path, progress=False).run(resume=True)
    assert resumed["step"] == 12
    for a, b in zip(leaves(full["theta"]), leaves(resumed["theta"])):
        np.testing.assert_array_equal(a, b)
    rows = lopt.meta.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))  # no duplicated lines after resuming


def test_corrupted_latest_checkpoint_falls_back_to_previous(uninterrupted, tmp_path):
    full, _ = uninterrupted
    MetaTrainer(small_config(), tmp_path, progress=False).run(stop_after=9)  # checkpoints at 4, 8, 9
    manager = lopt.meta.CheckpointManager(tmp_path / "checkpoints")
    assert manager.list()[-1] == 9
    newest = manager.path(9)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncate it
    with pytest.warns(RuntimeWarning, match="ckpt_00000009"):
        resumed = MetaTrainer(small_config(), tmp_path, progress=False).run(resume=True)
    for a, b in zip(leaves(full["theta"]), leaves(resumed["theta"])):
        np.testing.assert_array_equal(a, b)  # resumed from step 8 and still on the same trajectory


def test_without_full_checkpoints_save_points_keep_the_warm_start_only(uninterrupted, tmp_path):
    cfg = small_config()
    cfg.trainer.full_checkpoints = False
    stopped = MetaTrainer(cfg, tmp_path, progress=False).run(stop_after=6)
    assert stopped["step"] == 6 and os.listdir(tmp_path / "checkpoints") == []  # no inner-task state written
    theta, _, meta = load_warm_start(tmp_path / "warm_start.safetensors", lopt.learned.get("learnable_sgdm", lr=0.05))
    assert meta["extra"]["outer_steps"] == 6
    for a, b in zip(leaves(theta), leaves(stopped["theta"])):  # the same trajectory as with full checkpoints
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="trainer.init_from=.*warm_start.safetensors"):
        MetaTrainer(cfg, tmp_path, progress=False).run(resume=True)
    full = MetaTrainer(small_config(), tmp_path / "full", progress=False).run(stop_after=6)
    for a, b in zip(leaves(full["theta"]), leaves(stopped["theta"])):
        np.testing.assert_array_equal(a, b)


def test_deadline_counts_time_before_the_first_outer_step(uninterrupted, tmp_path):
    full, _ = uninterrupted
    trainer = MetaTrainer(small_config(), tmp_path, progress=False)
    stopped = trainer.run(deadline=time.time() - 1.0)  # spent already (e.g. by compilation): one step, then stop
    assert stopped["step"] == 1
    assert lopt.meta.CheckpointManager(tmp_path / "checkpoints").list() == [1]
    assert any("max_minutes" in note for note in stopped["notes"])
    resumed = MetaTrainer(small_config(), tmp_path, progress=False).run(resume=True, deadline=time.time() + 600)
    assert resumed["step"] == 12  # a far deadline leaves the configured run alone
    for a, b in zip(leaves(full["theta"]), leaves(resumed["theta"])):
        np.testing.assert_array_equal(a, b)


def test_diverging_tasks_leave_theta_finite(tmp_path):
    cfg = small_config()
    cfg.lopt.config = {"lr": 50.0}  # every inner training diverges within a few steps
    cfg.trainer.eval_every = 0
    result = MetaTrainer(cfg, tmp_path, progress=False).run()
    rows = lopt.meta.read_metrics(tmp_path / "metrics.jsonl")
    assert sum(r["diverged"] for r in rows) > 0
    assert sum(r["resets"] for r in rows) > 0  # diverged tasks were reset
    assert all(np.isfinite(x).all() for x in leaves(result["theta"]))
    assert all(np.isfinite(r["meta_loss"]) for r in rows)


@pytest.mark.parametrize("kind", ["tbptt", "es", "full_es"])
def test_other_estimators_train(kind, tmp_path):
    cfg = small_config()
    cfg.estimator.kind = kind
    cfg.trainer.outer_steps, cfg.trainer.eval_every = 3, 0
    result = MetaTrainer(cfg, tmp_path, progress=False).run()
    assert result["step"] == 3 and all(np.isfinite(x).all() for x in leaves(result["theta"]))


def test_config_overrides_toml_and_errors(tmp_path):
    cfg = load_config("quickstart", ["estimator.num_tasks=32", "outer.learning_rate=1e-3", "estimator.sign_only=true",
                                     "final_eval.adam_learning_rates=[0.1, 0.2]"])
    assert cfg.estimator.num_tasks == 32 and cfg.outer.learning_rate == 1e-3 and cfg.estimator.sign_only is True
    assert cfg.final_eval.adam_learning_rates == [0.1, 0.2]
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "canonical"\nseed = 7\n[estimator]\nkind = "tbptt"\nnum_tasks = 4\n')
    cfg = load_config(str(toml), ["trainer.outer_steps=5"])
    assert (cfg.name, cfg.seed, cfg.estimator.kind, cfg.estimator.num_tasks, cfg.trainer.outer_steps) == (
        "canonical", 7, "tbptt", 4, 5)
    assert MetaTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown config key 'estimator.num_task'"):
        load_config("quickstart", ["estimator.num_task=3"])
    with pytest.raises(ValueError, match="not a valid int"):
        load_config("quickstart", ["estimator.num_tasks=many"])
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("nope")
    with pytest.raises(ValueError, match="section.key=value"):
        load_config("quickstart", ["estimator.num_tasks"])
    with pytest.raises(ValueError, match="estimator.kind='nes'"):
        MetaTrainer(small_config(estimator={**small_config().estimator.__dict__, "kind": "nes"}), tmp_path)


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_theta(tmp_path):
    """SIGKILL a real `lopt train` process after its first checkpoints, then resume it."""
    toml = tmp_path / "cfg.toml"
    cfg = small_config().to_dict()
    cfg["trainer"]["outer_steps"] = 2000
    lines = [f"name = {json.dumps(cfg['name'])}", f"seed = {cfg['seed']}"]
    for section, values in cfg.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
            lines += [f"{k} = {{ {', '.join(f'{kk} = {json.dumps(vv)}' for kk, vv in v.items())} }}"
                      for k, v in values.items() if isinstance(v, dict)]
    toml.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lopt.cli", "train", str(toml), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([*cmd, "--set", "trainer.checkpoint_every=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    manager_dir = out / "checkpoints"
    while time.time() < deadline and not (manager_dir.exists() and len(list(manager_dir.glob("ckpt_*"))) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = lopt.meta.CheckpointManager(manager_dir).list()
    assert steps and steps[-1] < 2000
    subprocess.run([*cmd, "--resume", "--set", "trainer.checkpoint_every=500"], check=True,
                   stdout=subprocess.DEVNULL)
    reference = MetaTrainer(load_config(str(toml)), tmp_path / "ref", progress=False).run()
    resumed, _ = lopt.learned.load_theta(out / "theta.safetensors")
    for a, b in zip(leaves(reference["theta"]), leaves(resumed)):
        np.testing.assert_array_equal(a, b)


_TWO_DEVICE_RUN = """
import sys, jax, lopt
from lopt.meta.trainer import MetaTrainer
out = sys.argv[1]
cfg = lopt.meta.load_config("canonical", ["estimator.num_tasks=4", "trainer.outer_steps=6", "trainer.eval_every=3",
                                          "normalizer.enabled=false", "trainer.eval_tasks=2"])
trainer = MetaTrainer(cfg, out, progress=False)
print("MESH", None if trainer._mesh is None else trainer._mesh.size)
trainer.run(stop_after=3)  # interrupted, then resumed on the same devices
MetaTrainer(cfg, out, progress=False).run(resume=True)
"""


def test_one_structure_splits_its_tasks_over_local_devices(tmp_path):
    """Two host devices run the canonical trainer's tasks in parallel and follow the one-device
    theta trajectory, through an interruption and a resume."""
    thetas = {}
    for devices in (1, 2):
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        out = tmp_path / f"d{devices}"
        proc = subprocess.run([sys.executable, "-c", _TWO_DEVICE_RUN, str(out)], env=env, capture_output=True,
                              text=True, check=False, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"MESH {None if devices == 1 else devices}" in proc.stdout
        thetas[devices], _ = lopt.learned.load_theta(out / "theta.safetensors")
    for a, b in zip(jax.tree.leaves(thetas[1]), jax.tree.leaves(thetas[2])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert any(np.any(np.asarray(a) != 0) for a in jax.tree.leaves(thetas[1]))


def _partly_trainable(trainable: str) -> MetaTrainConfig:
    """outer.trainable (lopt.meta.trainable) on the small config, 5 outer steps, no evaluation."""
    return small_config(outer={"learning_rate": 0.01, "trainable": trainable},
                        trainer={"outer_steps": 5, "eval_every": 0, "checkpoint_minutes": 100.0})


def test_trainer_moves_only_the_trainable_leaves(tmp_path):
    start = lopt.learned.get("learnable_sgdm", lr=0.05).init(jax.random.key(0))
    theta = MetaTrainer(_partly_trainable("log_lr"), tmp_path / "part", progress=False).run()["theta"]
    assert float(theta["logit_momentum"]) == float(start["logit_momentum"])
    assert abs(float(theta["log_lr"]) - float(start["log_lr"])) > 1e-4
    full = MetaTrainer(_partly_trainable(""), tmp_path / "all", progress=False).run()["theta"]
    assert float(full["logit_momentum"]) != float(start["logit_momentum"])


def test_trainer_rejects_a_trainable_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(ValueError, match="outer.trainable='network'.*log_lr"):
        MetaTrainer(_partly_trainable("network"), tmp_path, progress=False)
