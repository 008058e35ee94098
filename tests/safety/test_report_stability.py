"""lopt eval's report shows runs that blew up or diverged: a Stability section, marked cells, stability.json."""

import json

import numpy as np

from lopt.evaluate import ResultsWriter, make_suite
from lopt.evaluate.report import write_report
from lopt.evaluate.results import Run, make_header
from lopt.evaluate.runner import cell_rows
from lopt.evaluate.stability import run_stability

STEPS, SEEDS = 40, 2
GRID = ['{"learning_rate": 0.001}', '{"learning_rate": 0.01}']


def write_results(directory, *, blow_up_task=None, nan_task=None):
    """Synthetic results: the candidate's seed 1 rises to 20x its initial loss on ``blow_up_task``
    and turns NaN half-way on ``nan_task``; everything else decreases."""
    suite = make_suite("quick", num_steps=STEPS, num_seeds=SEEDS)
    optimizers = {
        "cand": {"kind": "learned", "name": "mlp", "role": "candidate", "settings": ["{}"],
                 "source": {"architecture": "mlp", "theta_sha256": "abc"}},
        "adam_lr_grid": {"kind": "baseline", "name": "adam", "role": "baseline", "settings": GRID, "source": {}},
    }
    writer = ResultsWriter(directory, make_header(suite.to_dict(), optimizers, ["adam_per_task"]))
    eval_steps = np.arange(0, STEPS + 1, suite.eval_every)
    rows = []
    for index, task in enumerate(suite.tasks + suite.tuning_tasks):
        for label, keys in [("cand", ["{}"]), ("adam_lr_grid", GRID)]:
            for key in keys:
                for seed in range(SEEDS):
                    train = 2.0 / (1 + 0.1 * np.arange(1, STEPS + 1))
                    curve = 2.0 / (1 + 0.1 * eval_steps)
                    if label == "cand" and seed == 1 and index == blow_up_task:
                        train, curve = 2.0 * np.linspace(1, 20, STEPS), 2.0 * np.linspace(1, 20, len(eval_steps))
                    if label == "cand" and seed == 1 and index == nan_task:
                        train = np.where(np.arange(STEPS) < STEPS // 2, train, np.nan)
                        curve = np.where(eval_steps < STEPS // 2, curve, np.nan)
                    evals = {"valid_loss": curve, "valid_accuracy": 1 - curve / 40, "test_loss": curve,
                             "test_accuracy": 1 - curve / 40}
                    rows += cell_rows(task.id, label, key, seed, train, eval_steps, evals)
    writer.append(rows)
    return suite


def test_blown_up_and_diverged_runs_are_marked_and_counted(tmp_path):
    suite = write_results(tmp_path, blow_up_task=0, nan_task=1)
    text = write_report(tmp_path).read_text()
    first, second = suite.tasks[0].label, suite.tasks[1].label
    runs = len(suite.tasks) * 2  # the candidate and adam_per_task
    assert f"**2 of {runs} task x optimizer runs blew up or diverged**" in text
    assert f"| {first} | `cand` | 1/2 seeds | 0/2 seeds |" in text
    assert f"| {second} | `cand` | 0/2 seeds | 1/2 seeds |" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {first} |") and "⚠" in line)
    assert "⚠ 1/2 blew up" in row
    record = json.loads((tmp_path / "stability.json").read_text())
    assert record["unstable_runs"] == 2 and record["runs"] == runs
    assert record["records"][0] == {"task": first, "optimizer": "cand", "seeds": 2, "blew_up": 1, "diverged": 0}


def test_a_stable_evaluation_says_so(tmp_path):
    write_results(tmp_path)
    text = write_report(tmp_path).read_text()
    assert "No run blew up or diverged" in text and "⚠" not in text
    assert json.loads((tmp_path / "stability.json").read_text())["records"] == []


def test_run_stability_counts_seeds_by_the_curves_rule():
    train = np.array([[2.0, 1.5, 1.0, 0.8], [2.0, 4.0, 30.0, 40.0], [2.0, 1.0, np.nan, np.nan]])
    evals = np.array([[2.0, 0.8], [2.0, 1.0], [2.0, np.nan]])
    run = Run(np.arange(3), train, np.array([0, 4]), evals, evals, evals, evals)
    assert run_stability(run) == {"seeds": 3, "blew_up": 1, "diverged": 1}
    rising_valid = np.array([[2.0, 11.0]])  # training loss fine, validation loss 5.5x its start
    run = Run(np.arange(1), train[:1], np.array([0, 4]), rising_valid, rising_valid, rising_valid, rising_valid)
    assert run_stability(run) == {"seeds": 1, "blew_up": 1, "diverged": 0}
