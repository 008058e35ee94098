"""Reports from synthetic results (no training): markdown tables, every PNG, sweep plots."""

import numpy as np
import pytest

from lopt.evaluate import ResultsWriter, make_suite
from lopt.evaluate.report import compact_hparams, write_report
from lopt.evaluate.results import make_header
from lopt.evaluate.runner import cell_rows

STEPS, SEEDS = 40, 2
GRID = ['{"b1": 0.9, "learning_rate": 0.001}', '{"b1": 0.9, "learning_rate": 0.01}',
        '{"b1": 0.9, "learning_rate": 0.1}']


def _synthetic_results(directory, suite, *, candidate_rate):
    optimizers = {
        "cand": {"kind": "learned", "name": "mlp", "role": "candidate", "settings": ["{}"],
                 "source": {"architecture": "mlp", "theta_sha256": "abc", "checkpoint": "/x/theta.safetensors"}},
        "adam_lr_grid": {"kind": "baseline", "name": "adam", "role": "baseline", "settings": GRID, "source": {}},
    }
    writer = ResultsWriter(directory, make_header(suite.to_dict(), optimizers, ["adam_global", "adam_per_task"]))
    eval_steps = np.arange(0, STEPS + 1, suite.eval_every)
    rng = np.random.default_rng(0)
    rows = []
    for t_index, task in enumerate(suite.tasks + suite.tuning_tasks):
        for label, keys, rates in [("cand", ["{}"], [candidate_rate]), ("adam_lr_grid", GRID, [0.05, 0.2, 0.1])]:
            for key, rate in zip(keys, rates):
                rate = rate * (1 + 0.1 * t_index)
                for seed in range(SEEDS):
                    train = 2.0 / (1 + rate * np.arange(1, STEPS + 1)) * (1 + 0.05 * rng.normal(size=STEPS))
                    curve = 2.0 / (1 + rate * eval_steps)
                    evals = {"valid_loss": curve, "valid_accuracy": 1 - curve / 2, "test_loss": curve * 1.05,
                             "test_accuracy": 1 - curve / 2}
                    rows += cell_rows(task.id, label, key, seed, train, eval_steps, evals)
    writer.append(rows)


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sweep")
    suite = make_suite("ood_width", quick=True, num_tasks=3, num_steps=STEPS, num_seeds=SEEDS, num_tuning_tasks=1)
    _synthetic_results(directory, suite, candidate_rate=0.3)
    return directory, write_report(directory)


def test_report_has_every_figure_and_the_summary_table(sweep_report):
    directory, path = sweep_report
    for name in ("learning_curves.png", "improvement.png", "ood_sweeps.png", "normalized_losses.png"):
        assert (directory / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"]({name})" in path.read_text()
    text = path.read_text()
    assert "| `cand` | `adam_per_task` | 1.00 |" in text  # faster on every task: wins everywhere
    assert "median speedup" in text and "validation" in text
    assert "hidden width" in text or "ood_width" in text
    assert "| lr=0.01 | lr=0.01 |" in text  # the chosen settings (rate 0.2 is the best), compactly


def test_a_slower_candidate_loses_and_has_speedup_below_one(tmp_path):
    suite = make_suite("quick", num_steps=STEPS, num_seeds=SEEDS)
    _synthetic_results(tmp_path, suite, candidate_rate=0.02)
    text = write_report(tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `cand` | `adam_per_task`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "0.00" and float(cells[5].rstrip("x")) < 1.0
    assert not (tmp_path / "ood_sweeps.png").exists()  # no sweep in this suite


def test_compact_hparams_shows_only_what_the_search_varies():
    assert compact_hparams(GRID[1], GRID) == "lr=0.01"
    assert compact_hparams('{"nesterov": true, "b1": 0.5}', ['{"nesterov": true, "b1": 0.5}',
                                                              '{"nesterov": false, "b1": 0.9}']) == \
        "b1=0.5 nesterov=true"
