"""The self-training benchmark's ``--keep-thetas DIR`` option (benchmarks/self_training*.py)."""

import argparse
import os
import sys

import jax
import numpy as np
import pytest

import lopt
from lopt import checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import self_training
import self_training_thetas as kept_thetas


def _fake_run_dir(tmp_path, best=True):
    """A run directory holding theta files as MetaTrainer writes them (distinct thetas, trainer metadata)."""
    run = tmp_path / "run"
    run.mkdir()
    lopt_ = lopt.learned.get("learnable_adam")
    theta = jax.tree.map(lambda x: x + 0.25, lopt_.init(jax.random.key(0)))
    lopt.learned.save_theta(run / "theta.safetensors", lopt_, theta, extra={"outer_steps": 7, "config": "canonical"})
    if best:
        best_theta = jax.tree.map(lambda x: x - 0.5, theta)
        lopt.learned.save_theta(run / "theta_best.safetensors", lopt_, best_theta,
                                extra={"outer_steps": 5, "heldout_score": 0.01})
    return str(run), lopt_


def _assert_same_theta(path_a, path_b):
    (a, lopt_a), (b, lopt_b) = lopt.learned.load_theta(path_a), lopt.learned.load_theta(path_b)
    assert lopt_a == lopt_b
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_kept_files_load_and_equal_the_runs_thetas(tmp_path):
    run, lopt_ = _fake_run_dir(tmp_path)
    targets = kept_thetas.kept_theta_paths(str(tmp_path / "kept"), "learnable_adam", "adam:0.03", 0)
    kept = kept_thetas.keep_thetas(run, targets, {"lopt": "learnable_adam", "outer": "adam:0.03", "seed": 0})
    assert kept == {"theta.safetensors": str(tmp_path / "kept" / "learnable_adam_adam-0.03_seed0.safetensors"),
                    "theta_best.safetensors": str(tmp_path / "kept" / "learnable_adam_adam-0.03_seed0_best.safetensors")}
    for name, path in kept.items():
        _assert_same_theta(os.path.join(run, name), path)
        _, loaded = lopt.learned.load_theta(path, lopt_)  # digest verified, architecture checked
        assert loaded == lopt_
    # the trainer's metadata is kept and the run is named
    extra = checkpoint.read_metadata(kept["theta.safetensors"])["extra"]
    assert extra == {"outer_steps": 7, "config": "canonical", "lopt": "learnable_adam", "outer": "adam:0.03", "seed": 0}
    assert checkpoint.read_metadata(kept["theta_best.safetensors"])["extra"]["heldout_score"] == 0.01
    # the final and the best theta differ, so a swap would be caught
    final, _ = lopt.learned.load_theta(kept["theta.safetensors"])
    best, _ = lopt.learned.load_theta(kept["theta_best.safetensors"])
    assert not np.allclose(jax.tree.leaves(final)[0], jax.tree.leaves(best)[0])


def test_a_run_without_a_best_theta_keeps_only_the_final_one(tmp_path):
    run, _ = _fake_run_dir(tmp_path, best=False)
    targets = kept_thetas.kept_theta_paths(str(tmp_path), "learnable_adam", "pretrained", 3)
    kept = kept_thetas.keep_thetas(run, targets, {})
    assert list(kept) == ["theta.safetensors"] and kept["theta.safetensors"].endswith("learnable_adam_pretrained_seed3.safetensors")
    assert not os.path.exists(targets["theta_best.safetensors"])


def test_an_existing_kept_file_is_refused_and_left_alone(tmp_path):
    run, _ = _fake_run_dir(tmp_path)
    targets = kept_thetas.kept_theta_paths(str(tmp_path / "kept"), "learnable_adam", "pretrained", 0)
    os.makedirs(tmp_path / "kept")
    with open(targets["theta_best.safetensors"], "wb") as f:
        f.write(b"someone's work")
    with pytest.raises(ValueError, match=r"would overwrite .*pretrained_seed0_best\.safetensors.*another --keep-thetas"):
        kept_thetas.keep_thetas(run, targets, {})
    assert not os.path.exists(targets["theta.safetensors"])  # nothing written, not even the free target
    with open(targets["theta_best.safetensors"], "rb") as f:
        assert f.read() == b"someone's work"


def test_main_refuses_an_existing_kept_file_before_any_run(tmp_path, monkeypatch):
    taken = kept_thetas.kept_theta_paths(str(tmp_path), "learnable_adam", "adam:0.01", 1)["theta.safetensors"]
    open(taken, "w").close()
    monkeypatch.setattr(sys, "argv", ["self_training.py", "--seeds", "0,1", "--adam-grid", "1e-2",
                                      "--keep-thetas", str(tmp_path)])
    monkeypatch.setattr(self_training, "run_one", lambda *a: pytest.fail("a run started"))
    with pytest.raises(ValueError, match="learnable_adam_adam-0.01_seed1.safetensors"):
        self_training.main()


@pytest.mark.slow  # a real 2-step canonical run: PES, normaliser and evaluation programs to compile (~30 s cold)
def test_a_real_run_keeps_its_final_theta(tmp_path):
    args = argparse.Namespace(config="canonical", num_tasks=1, outer_steps=2, eval_every=2, eval_tasks=1,
                              eval_steps=20, keep_thetas=str(tmp_path))
    run = self_training.run_one("learnable_adam", "adam:0.01", 0, args)
    path = run["kept_thetas"]["theta.safetensors"]
    assert path == str(tmp_path / "learnable_adam_adam-0.01_seed0.safetensors")
    theta, lopt_ = lopt.learned.load_theta(path)
    assert lopt_.name == "learnable_adam"
    # the kept theta is the run's final theta, whose scalars the run reports
    assert {k: float(v) for k, v in theta.items()} == pytest.approx(run["final_theta_scalars"], rel=0, abs=0)
    assert checkpoint.read_metadata(path)["extra"]["outer_steps"] == 2
    with pytest.raises(ValueError, match="would overwrite"):  # a second run into the same directory
        self_training.run_one("learnable_adam", "adam:0.01", 0, args)
