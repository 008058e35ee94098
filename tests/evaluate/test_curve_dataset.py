"""The curve dataset: round trip, resume (cells skipped), digests, bad input, rebuild from results."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lopt import checkpoint
from lopt.evaluate.curves import CurveDataset, RunBatch, from_results, load
from lopt.evaluate.results import ResultsWriter, make_header
from lopt.evaluate.results import load as load_results
from lopt.evaluate.runner import cell_rows

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import tiny_suite


def _batch(task="t0", seeds=(0, 1), steps=6, offset=0.0, optimizer="adam"):
    n = len(seeds)
    train = offset + np.arange(n * steps, dtype=np.float32).reshape(n, steps)
    valid = np.stack([[10.0 + i, 5.0 + i] for i in range(n)])
    return RunBatch(task=task, optimizer=optimizer, hparams='{"learning_rate": 0.01}', seed=list(seeds),
                    train_loss=train, eval_steps=[0, steps], valid_loss=valid, test_loss=valid + 1, source="eval",
                    task_configs={task: {"family": "quadratic", "dim": 3}})


def test_round_trip_columns_and_curves(tmp_path):
    data = CurveDataset(tmp_path / "curves")
    assert data.append(_batch()) == 2
    assert data.append(_batch(task="t1", seeds=(0,), steps=10)) == 1  # another horizon: another shard
    table = load(tmp_path / "curves")
    assert len(table) == 3 and len(data.shards()) == 2
    assert table["task"].tolist() == ["t0", "t0", "t1"]
    assert table["num_steps"].tolist() == [6, 6, 10]
    np.testing.assert_array_equal(table.train_loss[1], np.arange(6, 12, dtype=np.float32))
    assert table.train_loss[2].shape == (10,)
    assert table["initial_valid_loss"].tolist() == [10.0, 11.0, 10.0]
    assert table["final_valid_loss"].tolist() == [5.0, 6.0, 5.0]
    assert table["final_test_loss"].tolist() == [6.0, 7.0, 6.0]
    assert np.isnan(table["final_valid_accuracy"]).all()  # absent columns are NaN-filled
    assert table["final_train_loss"][0] == pytest.approx(5.0)  # mean of the last 5% (>= 1 step)
    assert table.task_configs["t1"] == {"family": "quadratic", "dim": 3}
    assert table.where(task="t0", seed=1).tolist() == [1]


def test_resume_skips_present_cells_and_keeps_new_ones(tmp_path):
    data = CurveDataset(tmp_path)
    data.append(_batch(seeds=(0,)))
    digest = data.digest()
    reopened = CurveDataset(tmp_path)  # a new process: cells read back from the shards
    assert reopened.append(_batch(seeds=(0, 1, 2), offset=100.0)) == 2
    table = load(tmp_path)
    assert sorted(table["seed"].tolist()) == [0, 1, 2]
    first = table.where(seed=0)[0]
    assert table.train_loss[first][0] == 0.0  # the original run was not replaced
    assert reopened.digest() != digest and load(tmp_path).digest == reopened.digest()
    assert CurveDataset(tmp_path).append(_batch(seeds=(2, 1))) == 0


def test_a_damaged_shard_is_refused(tmp_path):
    data = CurveDataset(tmp_path)
    data.append(_batch())
    path = data.shards()[0]
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip a byte in the last tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.DigestMismatchError, match="damaged"):
        load(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"train_loss": np.zeros(3)}, "train_loss must be"),
    ({"seed": [0, 1, 2]}, "seed has 3 entries"),
    ({"valid_loss": np.zeros((2, 3))}, r"valid_loss must have shape \(2, 2\)"),
    ({"eval_steps": [0, 99]}, "eval_steps"),
    ({"task": ["a", "b", "c"]}, "task has 3 entries"),
])
def test_bad_batches_raise(kwargs, match):
    base = {"task": "t", "optimizer": "o", "hparams": "{}", "seed": [0, 1], "train_loss": np.zeros((2, 4)),
            "eval_steps": [0, 4]}
    with pytest.raises(ValueError, match=match):
        RunBatch(**{**base, **kwargs})


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        CurveDataset(tmp_path / "file")
    with pytest.raises(TypeError, match="RunBatch"):
        CurveDataset(tmp_path / "d").append({"task": "t"})


def test_rebuild_from_results_matches_the_csv(tmp_path):
    suite = tiny_suite(num_tasks=1, num_steps=4)
    header = make_header(suite.to_dict(), {"adam": {"settings": ["{}"]}}, [])
    writer = ResultsWriter(tmp_path, header)
    evals = {c: np.array([2.0, 1.0]) for c in ("valid_loss", "valid_accuracy", "test_loss", "test_accuracy")}
    task = suite.tasks[0].id
    for seed in (0, 1):
        writer.append(cell_rows(task, "adam", "{}", seed, np.array([4.0, 3.0, 2.0, 1.0]) + seed, np.array([0, 4]),
                                evals))
    assert from_results(tmp_path) == 2
    assert from_results(tmp_path) == 0  # regenerating skips what is there
    from lopt.cli import main

    assert main(["eval", "--rebuild-curves", str(tmp_path)]) == 0  # the command: nothing new to add
    table = load(tmp_path / "curves")
    run = load_results(tmp_path).run(task, "adam", "{}")
    np.testing.assert_array_equal(np.stack(table.train_loss), run.train_loss)
    assert table.task_configs[task]["family"] == "quadratic"
