"""The opt_list search: normalised loss tables, a tiny end-to-end search, resume without re-running."""

from __future__ import annotations

import numpy as np
import pytest

from lopt.evaluate import opt_list_search
from lopt.evaluate.curves import CurveDataset, RunBatch, load
from lopt.evaluate.opt_list_search import OptListSearch, learn_opt_list, loss_table, task_id
from lopt.optimizers import load_opt_list

TINY = OptListSearch(families=("quadratic",), num_structures=2, tasks_per_structure=2, num_trials=4, num_steps=10,
                     eval_every=5, eval_batches=1, heldout_fraction=0.5, list_size=3)


def test_loss_table_normalises_each_task_by_its_initial_and_best_loss(tmp_path):
    data = CurveDataset(tmp_path)
    # task a: initial 4, finals 3, 2, nan (diverged) -> (3-2)/2, 0, 2 ; task b: two seeds averaged
    for task, finals, seeds in (("a", [3.0, 2.0, np.nan], [0]), ("b", [1.0, 0.5, 0.9], [0, 1])):
        for h, final in enumerate(finals):
            n = len(seeds)
            valid = np.array([[4.0, final + 0.1 * s] for s in seeds]) if task == "b" else np.array([[4.0, final]])
            data.append(RunBatch(task=task, optimizer="nadamw", hparams=f"h{h}", seed=seeds,
                                 train_loss=np.ones((n, 10)), eval_steps=[0, 10], valid_loss=valid,
                                 source="opt_list"))
    table = loss_table(load(tmp_path), ["a", "b"], ["h0", "h1", "h2"], num_steps=10)
    np.testing.assert_allclose(table[0], [0.5, 0.0, 2.0])
    finals_b = np.array([1.05, 0.55, 0.95])  # seed means
    np.testing.assert_allclose(table[1], (finals_b - 0.55) / (4.0 - 0.55), rtol=1e-6)
    with pytest.raises(ValueError, match="no 10-step run of setting 3"):
        loss_table(load(tmp_path), ["a"], ["h0", "h1", "h2", "h3"], num_steps=10)


def test_tiny_search_learns_a_list_and_resumes_without_training(tmp_path, monkeypatch):
    result = learn_opt_list(tmp_path, TINY)
    settings, info = load_opt_list(result.path)
    assert settings == result.settings and len(settings) == 3
    assert info["num_train_tasks"] == 2 and info["num_heldout_tasks"] == 2
    assert len(set(result.order.tolist())) == 3
    tasks = TINY.tasks()
    ids = [task_id(cfg) for cfg, _ in tasks]
    held = np.array([h for _, h in tasks])
    keys = opt_list_search.search_spec("nadamw_search", num_trials=4, seed=0).keys()
    losses = loss_table(load(tmp_path / "curves"), ids, keys, num_steps=10)
    best = losses.min(axis=1)  # each task's best trial normalises to 0, unless no trial got below the start
    assert np.all((best == 0.0) | (best >= 1.0 - 1e-6)) and np.any(best == 0.0)
    # the first entry is the trial with the lowest mean on the training tasks
    assert result.order[0] == np.argmin(losses[~held].mean(axis=0))
    np.testing.assert_allclose(result.heldout_best_of_k, np.minimum.accumulate(
        losses[held][:, result.order], axis=1).mean(axis=0))
    np.testing.assert_allclose(result.heldout_random_best_of_k[0], losses[held].mean())  # best-of-1: any trial
    assert (tmp_path / "opt_list_best_of_k.png").stat().st_size > 0
    table = load(tmp_path / "curves")
    assert len(table) == 4 * 4 and set(table["source"].tolist()) == {"opt_list"}

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed search must not train tasks that are in the dataset")

    monkeypatch.setattr(opt_list_search, "train_cells", no_training)
    again = learn_opt_list(tmp_path, TINY)
    assert again.settings == result.settings


@pytest.mark.parametrize("kwargs, match", [({"num_trials": 0}, "num_trials"), ({"list_size": 9, "num_trials": 4},
                                          "list_size=9 exceeds"), ({"heldout_fraction": 1.0}, "heldout_fraction")])
def test_bad_search_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptListSearch(**kwargs)


def test_cli_learn_then_show(tmp_path, capsys):
    from lopt.cli import main

    argv = ["optlist", "learn", "--out", str(tmp_path), "--families", "quadratic", "--structures", "2",
            "--tasks-per-structure", "2", "--trials", "4", "--steps", "10", "--eval-every", "5",
            "--heldout-fraction", "0.5", "--list-size", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "opt_list held-out" in out and "random held-out" in out
    assert main(["optlist", "show", str(tmp_path / "opt_list.json"), "--k", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("  1  {") and shown[1].startswith("  2  {") and "k=2" in shown[-1]
    assert main(["optlist", "learn", "--out", str(tmp_path), "--trials", "0"]) == 2  # a one-line error
    assert "num_trials=0" in capsys.readouterr().err
