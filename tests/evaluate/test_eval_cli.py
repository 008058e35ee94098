"""`lopt eval`: complete reports for a baseline and a checkpoint, combining, one-line errors."""

import json

import jax
import pytest

import lopt.learned
from lopt.cli import main

QUICK = ["--suite", "quick", "--tasks", "1", "--steps", "20", "--eval-every", "10", "--grid-size", "3", "--no-progress"]
FIGURES = ("learning_curves.png", "improvement.png", "normalized_losses.png")


def _check_report(directory, names):
    text = (directory / "report.md").read_text()
    for figure in FIGURES:
        assert (directory / figure).read_bytes()[:4] == b"\x89PNG", figure
        assert f"({figure})" in text
    for name in names:
        assert f"`{name}`" in text
    return text


def test_adam_then_a_checkpoint_then_combined_each_write_a_complete_report(tmp_path, capsys):
    # One test, so that the steps share one process's compiled programs (under pytest-xdist too).
    adam_dir = tmp_path / "adam"
    assert main(["eval", "adam", *QUICK, "--baselines", "adam_global,adam_per_task", "--out", str(adam_dir)]) == 0
    text = _check_report(adam_dir, ["adam", "adam_global", "adam_per_task"])
    assert "| `adam` | `adam_per_task` |" in text
    header = json.loads((adam_dir / "results.json").read_text())
    assert header["suite"]["name"] == "quick" and header["baselines"] == ["adam_global", "adam_per_task"]

    # A checkpoint laid out like a `lopt train` output directory, evaluated into the same directory:
    # only its own cells run, the baselines' runs are reused.
    architecture = lopt.learned.get("learnable_adam", lr=3e-3)
    run_dir = tmp_path / "train-run"
    lopt.learned.save_theta(run_dir / "theta.safetensors", architecture, architecture.init(jax.random.key(0)))
    lines_before = (adam_dir / "results.csv").read_text().count("\n")
    assert main(["eval", str(run_dir), *QUICK, "--baselines", "adam_global,adam_per_task",
                 "--out", str(adam_dir)]) == 0
    lines_added = (adam_dir / "results.csv").read_text().count("\n") - lines_before
    assert lines_added == 1 * 2 * 21  # one task x two seeds x (20 steps + step 0)
    text = _check_report(adam_dir, ["adam", "train-run", "adam_per_task"])
    assert "| `train-run` | `adam_global` |" in text
    assert "report:" in capsys.readouterr().out

    # Another optimizer in its own directory, combined with the first into one report.
    other = tmp_path / "sgd"
    assert main(["eval", "sgd:learning_rate=0.3", *QUICK, "--baselines", "none", "--out", str(other)]) == 0
    merged = tmp_path / "merged"
    assert main(["eval", "--combine", str(adam_dir), str(other), "--out", str(merged)]) == 0
    text = _check_report(merged, ["adam", "train-run", "sgd:learning_rate=0.3", "adam_per_task"])
    assert "| `sgd:learning_rate=0.3` | `adam_per_task` |" in text
    (merged / "report.md").unlink()
    assert main(["eval", "--report", str(merged)]) == 0
    assert (merged / "report.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["eval"], "at least one optimizer"),
    (["eval", "adamz"], "unknown optimizer 'adamz'"),
    (["eval", "adam", "--suite", "nope"], "unknown suite 'nope'"),
    (["eval", "adam", "--baselines", "adam_best"], "unknown baseline 'adam_best'"),
    (["eval", "adam", "--steps", "0"], "num_steps=0"),
    (["eval", "missing/theta.safetensors"], "does not exist"),
    (["eval", "adam:learning_rate=-1"], "learning_rate"),
    (["eval", "adam", "sgd", "--label", "x"], "single optimizer"),
    (["eval", "--combine", "a", "b"], "--out"),
    (["eval", "--report", "no-such-dir"], "not an evaluation results directory"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_list(capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    assert "ood_width" in out and "nadamw_per_task" in out
