"""The `lopt` command: listing, running, outputs, and one-line errors for bad input."""

import csv
import json
import os
import re

import numpy as np
import pytest

from lopt.cli import main


def test_tasks_lists_every_family(capsys):
    import lopt

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in lopt.tasks.names():
        assert name in out


def test_tasks_json_with_samples(capsys):
    assert main(["tasks", "--family", "quadratic", "--samples", "2", "--seed", "5", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[0]["family"] == "quadratic" and len(info[0]["samples"]) == 2
    assert info[0]["samples"][0]["num_params"] == info[0]["samples"][0]["config"]["dim"]


def test_run_writes_curves_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--task", "mlp", "--cfg", '{"dataset": "digits", "hidden_sizes": [16], "batch_size": 32}',
                 "--optimizer", "adam", "--lr", "0.01", "--steps", "60", "--eval-every", "20",
                 "--eval-batches", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    assert {"train_loss.csv", "eval.csv", "run.json", "learning_curve.png"} <= set(os.listdir(out))
    with open(out / "train_loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60
    with open(out / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    assert [int(r["step"]) for r in evals] == [0, 20, 40, 60]
    record = json.loads((out / "run.json").read_text())
    assert record["hparams"] == {"learning_rate": 0.01}
    assert record["summary"]["final_valid_loss"] < float(evals[0]["valid_loss"])
    np.testing.assert_allclose(record["curves"]["train_loss"], [float(r["train_loss"]) for r in rows], rtol=1e-6)
    assert "final valid accuracy" in capsys.readouterr().out
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_run_with_sampled_config_and_nadamw_total_steps(tmp_path):
    code = main(["run", "--task", "quadratic", "--seed", "3", "--optimizer", "nadamw",
                 "--hparam", "warmup_fraction=0.1", "--steps", "30", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["hparams"]["total_steps"] == 30 and record["task"]["family"] == "quadratic"


@pytest.mark.parametrize("argv, message", [
    (["run", "--task", "nope"], "valid names"),
    (["run", "--task", "quadratic", "--optimizer", "adamz"], "valid"),
    (["run", "--task", "quadratic", "--lr", "-1"], "learning_rate=-1"),
    (["run", "--task", "quadratic", "--cfg", '{"dim": 0}'], "dim=0"),
    (["run", "--task", "quadratic", "--cfg", "{not json"], "not valid JSON"),
    (["run", "--task", "quadratic", "--hparam", "b1"], "NAME=VALUE"),
    (["run", "--task", "quadratic", "--steps", "0"], "num_steps=0"),
    (["tasks", "--family", "nope"], "valid names"),
])
def test_bad_input_is_one_line_error(argv, message, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_small_run_writes_report(tmp_path, capsys):
    out = tmp_path / "train"
    argv = ["train", "--out", str(out), "--no-progress",
            "--set", "task.family=quadratic", "--set", 'task.config={"dim": 6}',
            "--set", "lopt.name=learnable_adam", "--set", "estimator.num_tasks=2", "--set", "estimator.unroll_length=5",
            "--set", "truncation.horizon=20", "--set", "normalizer.enabled=false", "--set", "trainer.outer_steps=4",
            "--set", "trainer.eval_every=2", "--set", "trainer.eval_steps=20", "--set", "final_eval.steps=30",
            "--set", "final_eval.seeds=2", "--set", "final_eval.adam_learning_rates=[0.01, 0.1]"]
    assert main(argv) == 0
    files = set(os.listdir(out))
    assert {"theta.safetensors", "config.json", "metrics.jsonl", "eval.jsonl", "meta_training.png",
            "learning_curves.png", "comparison.json", "summary.md"} <= files
    summary = (out / "summary.md").read_text()
    assert "learned (learnable_adam)" in summary and "adam lr=0.1" in summary
    comparison = json.loads((out / "comparison.json").read_text())
    assert len(comparison["rows"]) == 3
    assert main(["train", "--out", str(out), "--resume", "--no-progress", *argv[4:]]) == 0  # nothing left: no-op


def test_train_show_config_and_errors(capsys):
    assert main(["train", "--show-config", "--set", "estimator.num_tasks=3"]) == 0
    assert json.loads(capsys.readouterr().out)["estimator"]["num_tasks"] == 3
    assert main(["train", "--set", "estimator.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert "--out" in capsys.readouterr().err


def test_train_without_full_checkpoints_continues_from_its_warm_start(tmp_path, capsys):
    out = tmp_path / "light"
    sets = ["--set", "task.family=quadratic", "--set", 'task.config={"dim": 6}', "--set", "lopt.name=learnable_adam",
            "--set", "estimator.num_tasks=2", "--set", "estimator.unroll_length=5", "--set", "truncation.horizon=20",
            "--set", "normalizer.enabled=false", "--set", "trainer.outer_steps=2", "--set", "trainer.eval_every=0",
            "--set", "final_eval.enabled=false", "--set", "trainer.full_checkpoints=false"]
    assert main(["train", "--out", str(out), "--no-progress", *sets]) == 0
    assert (out / "warm_start.safetensors").exists() and not os.listdir(out / "checkpoints")
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2  # refused, with the way on
    captured = capsys.readouterr()
    assert f"trainer.init_from={out}/warm_start.safetensors" in captured.err and "restarting" not in captured.out
    assert main(["train", "--out", str(tmp_path / "next"), "--no-progress", *sets,
                 "--set", f"trainer.init_from={out}/warm_start.safetensors"]) == 0


def test_run_pretrained_takes_only_its_execution_options(tmp_path, capsys):
    task = ["--task", "quadratic", "--cfg", '{"dim": 6}', "--steps", "40", "--eval-every", "20",
            "--eval-batches", "1", "--no-progress"]
    runs = {}
    for name, extra in (("f32", []), ("bf16", ["--hparam", "state_dtype=bfloat16"]),
                        ("f16_network", ["--hparam", "kernel_precision=float16"])):
        out = tmp_path / name
        assert main(["run", *task, "--optimizer", "pretrained", *extra, "--out", str(out)]) == 0
        runs[name] = json.loads((out / "run.json").read_text())
    assert runs["bf16"]["hparams"] == {"state_dtype": "bfloat16"} and runs["f32"]["hparams"] == {}
    assert runs["f16_network"]["hparams"] == {"kernel_precision": "float16"}
    first, last = (runs["bf16"]["curves"]["train_loss"][i] for i in (0, -1))
    assert last < first  # it trains
    capsys.readouterr()
    assert main(["run", *task, "--optimizer", "pretrained", "--hparam", "b1=0.8", "--out", str(tmp_path / "x")]) == 2
    assert re.search(r"no learning rate.*\['b1'\].*state_dtype=bfloat16.*kernel_precision=float16",
                     capsys.readouterr().err)
    assert main(["run", *task, "--optimizer", "pretrained", "--lr", "0.1", "--out", str(tmp_path / "y")]) == 2
    assert "['learning_rate']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
