"""The results directory: tidy rows, resume after torn writes, header checks, combining."""

import csv
import json

import numpy as np
import pytest

from lopt.evaluate import ResultsWriter, combine, load, make_suite, read_header
from lopt.evaluate.results import COLUMNS, make_header
from lopt.evaluate.runner import cell_rows

STEPS = 4


def _suite(**kw):
    return make_suite("quick", num_steps=STEPS, eval_every=2, **kw)


def _header(suite, labels=("adam",)):
    optimizers = {label: {"kind": "baseline", "name": "adam", "role": "candidate", "settings": ["{}"], "source": {}}
                  for label in labels}
    return make_header(suite.to_dict(), optimizers, [])


def _cell(task, label="adam", seed=0, offset=0.0):
    train = np.linspace(2.0, 1.0, STEPS) + offset
    evals = {"valid_loss": np.array([2.0, 1.5, 1.0]), "valid_accuracy": np.array([0.1, 0.5, 0.7]),
             "test_loss": np.array([2.1, np.nan, 1.1]), "test_accuracy": np.array([0.1, 0.5, 0.6])}
    return cell_rows(task, label, "{}", seed, train, np.array([0, 2, 4]), evals)


def test_rows_are_tidy_one_per_step_with_evals_where_evaluated(tmp_path):
    writer = ResultsWriter(tmp_path, _header(_suite()))
    writer.append(_cell("t1") + _cell("t1", seed=1))
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == 2 * (STEPS + 1)
    assert [r["step"] for r in rows[:5]] == ["0", "1", "2", "3", "4"]
    assert rows[0]["train_loss"] == "" and rows[1]["valid_loss"] == "" and rows[2]["valid_loss"] == "1.5"
    assert rows[2]["test_loss"] == "nan"  # diverged is nan, not-evaluated is empty
    run = load(tmp_path).run("t1", "adam", "{}")
    assert run.train_loss.shape == (2, STEPS) and list(run.eval_steps) == [0, 2, 4]
    np.testing.assert_allclose(run.valid_loss[1], [2.0, 1.5, 1.0])
    assert np.isnan(run.test_loss[0, 1])


def test_reopening_drops_a_torn_line_and_unfinished_cells(tmp_path):
    suite = _suite()
    writer = ResultsWriter(tmp_path, _header(suite))
    writer.append(_cell("t1"))
    # an interrupted write: half of a cell, and a line cut in the middle
    with open(tmp_path / "results.csv", "a") as f:
        f.write("".join(",".join(map(str, r)) + "\n" for r in _cell("t2")[:3]))
        f.write("t2,adam,{},0,3,1.2")
    reopened = ResultsWriter(tmp_path, _header(suite))
    assert reopened.finished == {("t1", "adam", "{}", 0)}
    text = (tmp_path / "results.csv").read_text()
    assert "t2" not in text and text.endswith("\n")
    reopened.append(_cell("t2"))
    assert set(load(tmp_path).runs) == {("t1", "adam", "{}"), ("t2", "adam", "{}")}


def test_another_suite_in_the_same_directory_is_refused(tmp_path):
    ResultsWriter(tmp_path, _header(_suite()))
    with pytest.raises(ValueError, match="different suite"):
        ResultsWriter(tmp_path, _header(make_suite("quick", num_steps=STEPS + 1, eval_every=2)))


def test_same_label_with_other_settings_is_refused_and_new_labels_are_added(tmp_path):
    suite = _suite()
    ResultsWriter(tmp_path, _header(suite))
    other = _header(suite)
    other["optimizers"]["adam"]["settings"] = ['{"learning_rate": 0.1}']
    with pytest.raises(ValueError, match="--label"):
        ResultsWriter(tmp_path, other)
    ResultsWriter(tmp_path, _header(suite, labels=("sgd",)))
    assert set(read_header(tmp_path)["optimizers"]) == {"adam", "sgd"}


def test_combine_merges_optimizers_and_keeps_the_first_copy_of_a_cell(tmp_path):
    suite = _suite()
    ResultsWriter(tmp_path / "a", _header(suite)).append(_cell("t1"))
    writer_b = ResultsWriter(tmp_path / "b", _header(suite, labels=("adam", "sgd")))
    writer_b.append(_cell("t1", offset=5.0) + _cell("t1", label="sgd"))
    out = combine([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    results = load(out)
    assert set(results.runs) == {("t1", "adam", "{}"), ("t1", "sgd", "{}")}
    assert results.run("t1", "adam", "{}").train_loss[0, 0] == pytest.approx(2.0)  # from a, not b
    with pytest.raises(ValueError, match="different suite"):
        ResultsWriter(tmp_path / "c", _header(make_suite("quick", num_steps=STEPS + 1)))
        combine([tmp_path / "a", tmp_path / "c"], tmp_path / "ac")


def test_header_records_versions_and_the_suite(tmp_path):
    suite = _suite()
    ResultsWriter(tmp_path, _header(suite))
    header = json.loads((tmp_path / "results.json").read_text())
    assert {"lopt", "jax", "optax", "numpy", "python"} <= set(header["versions"])
    assert header["suite"]["tasks"][0]["config"] == suite.tasks[0].config.to_dict()


def test_not_a_results_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an evaluation results directory"):
        load(tmp_path)
