"""lopt train's output directory: never clobbered, resumed from its own config, no duplicated steps.

Small runs: the quickstart preset on an 8-dimensional quadratic with ``learnable_sgdm`` (the MLP
task of the preset compiles for a minute on two shared cores), 2 tasks, unroll 5, horizon 20.
"""

import json
import os

import jax
import numpy as np
import pytest

import lopt
from lopt.cli import main
from lopt.evaluate import resolve
from lopt.meta.config import load_config
from lopt.meta.run_directory import clear_for_new_run, open_run, resume_config
from lopt.meta.trainer import MetaTrainer
from lopt.output_dir import OutputExistsError

from .test_output_dir import snapshot

SETTINGS = ["task.family=quadratic", 'task.config={"dim": 8}', "lopt.name=learnable_sgdm",
            "estimator.num_tasks=2", "estimator.unroll_length=5", "truncation.horizon=20",
            "normalizer.enabled=false", "final_eval.enabled=false", "trainer.eval_every=0",
            "trainer.checkpoint_every=2", "trainer.checkpoint_minutes=100"]

SET_ARGS = [arg for setting in SETTINGS for arg in ("--set", setting)]


def config(steps):
    return load_config("quickstart", [*SETTINGS, f"trainer.outer_steps={steps}"])


def cli(*argv):
    return main(["train", *argv, "--no-progress"])


def theta_of(directory):
    theta, _ = lopt.learned.load_theta(directory / "theta.safetensors")
    return [np.asarray(x) for x in jax.tree.leaves(theta)]


def steps_logged(directory):
    return [r["step"] for r in lopt.meta.read_metrics(directory / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-step run."""
    out = tmp_path_factory.mktemp("reference")
    MetaTrainer(config(4), out, progress=False).run()
    return out


def test_new_run_into_a_run_refuses_and_changes_no_byte(reference, capsys):
    before = snapshot(reference)
    assert cli("quickstart", *SET_ARGS, "--out", str(reference)) == 2
    err = capsys.readouterr().err
    assert "already holds a meta-training run" in err and "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err
    with pytest.raises(OutputExistsError):
        MetaTrainer(config(4), reference, progress=False).run()  # the API refuses too
    assert snapshot(reference) == before


def test_killed_run_resumes_with_its_saved_config_bit_for_bit(reference, tmp_path):
    MetaTrainer(config(4), tmp_path, progress=False).run(stop_after=3)  # checkpoints at 2 and 3
    os.remove(tmp_path / "checkpoints" / "ckpt_00000003.safetensors")  # as if killed between 2 and 3
    assert cli("--out", str(tmp_path), "--resume") == 0  # no config argument: the run's own config.json
    for a, b in zip(theta_of(tmp_path), theta_of(reference)):
        np.testing.assert_array_equal(a, b)
    assert steps_logged(tmp_path) == [1, 2, 3, 4]  # step 3 of the killed attempt is not logged twice
    events = [r["event"] for r in lopt.meta.read_metrics(tmp_path / "config_history.jsonl")]
    assert events == ["start", "resume"]


def test_extending_a_finished_run_with_a_safe_set_matches_the_longer_run(reference, tmp_path, capsys):
    assert cli("quickstart", *SET_ARGS, "--set", "trainer.outer_steps=2",
               "--out", str(tmp_path)) == 0
    original = json.loads((tmp_path / "config.json").read_text())
    assert cli("--out", str(tmp_path), "--resume", "--set", "trainer.outer_steps=4",
               "--set", "trainer.checkpoint_every=1") == 0
    assert "trainer.outer_steps: 2 -> 4" in capsys.readouterr().out
    for a, b in zip(theta_of(tmp_path), theta_of(reference)):
        np.testing.assert_array_equal(a, b)
    assert steps_logged(tmp_path) == [1, 2, 3, 4]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["trainer"]["outer_steps"] == 4 and saved["trainer"]["checkpoint_every"] == 1
    history = lopt.meta.read_metrics(tmp_path / "config_history.jsonl")
    assert history[0]["event"] == "start" and history[0]["config"] == original  # the record is kept
    assert history[1]["event"] == "resume" and history[1]["step"] == 2
    assert history[1]["changes"] == {"trainer.outer_steps": [2, 4], "trainer.checkpoint_every": [2, 1]}
    with pytest.raises(ValueError, match="already reached step 4; give trainer.outer_steps >= 4"):
        open_run(tmp_path, load_config(str(tmp_path), ["trainer.outer_steps=3"]), resume=True)


def test_resume_refuses_changes_it_cannot_make(reference):
    with pytest.raises(ValueError, match=r"outer.learning_rate is 0.003 in its config.json but 0.1 now; it "
                                         r"cannot change on resume"):
        resume_config(reference, None, ["outer.learning_rate=0.1"])
    with pytest.raises(ValueError, match=r"task.family is \"quadratic\" in its config.json but \"mlp\" in 'quickstart'"):
        resume_config(reference, "quickstart", [])  # the preset alone differs from the saved config
    with pytest.raises(ValueError, match=r"trainer.outer_steps is 4 in its config.json but 1000 in 'quickstart'"
                                         r"; resume without a config argument.*--set trainer.outer_steps=1000"):
        resume_config(reference, "quickstart", SETTINGS)  # the README case: the preset's 1,000 steps
    same, changes = resume_config(reference, str(reference / "config.json"), [])
    assert changes == {} and same == config(4)


def test_resume_of_missing_or_empty_directories_is_an_error(tmp_path, capsys):
    assert cli("--out", str(tmp_path / "nope"), "--resume") == 2
    assert "does not exist; start a new run" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()
    assert cli("--out", str(tmp_path), "--resume") == 2
    assert "holds no run" in capsys.readouterr().err


def test_resume_without_a_checkpoint_restarts_and_moves_the_old_logs_aside(reference, tmp_path):
    cfg = config(4)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))  # killed before the first checkpoint
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "meta_loss": 9.0}\n')
    trainer = MetaTrainer(cfg, tmp_path, progress=False)
    trainer.run(resume=True)
    assert any("no checkpoint yet: starting from step 0" in n for n in trainer.notes)
    assert steps_logged(tmp_path) == [1, 2, 3, 4]
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("before-restart-")]
    assert (moved / "metrics.jsonl").read_text() == '{"step": 1, "meta_loss": 9.0}\n'
    for a, b in zip(theta_of(tmp_path), theta_of(reference)):
        np.testing.assert_array_equal(a, b)


def test_overwrite_moves_the_old_run_aside(reference, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in os.listdir(reference):
        if os.path.isfile(reference / name) and name != "lopt.lock":
            (run / name).write_bytes((reference / name).read_bytes())
    before = snapshot(run)
    backup = clear_for_new_run(run, overwrite=True)
    assert snapshot(backup) == before  # every byte kept, in previous-<time>/
    assert not (run / "config.json").exists() and not (run / "theta.safetensors").exists()


def test_eval_refuses_a_theta_that_is_not_the_runs(reference, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "theta.safetensors").write_bytes((reference / "theta.safetensors").read_bytes())
    other = config(4)
    other.estimator.std = 0.5
    (run / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(ValueError, match=r"was written for estimator.std=0.01, but .*config.json says "
                                         r"estimator.std=0.5"):
        resolve(str(run))
    other.estimator.std = 0.01
    other.trainer.outer_steps = 10  # an extension in progress: the earlier theta still belongs to the run
    (run / "config.json").write_text(json.dumps(other.to_dict()))
    assert resolve(str(run)).label == "run"
