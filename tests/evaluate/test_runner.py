"""The runner: one compiled program per grid, resuming without recomputation, learned optimizers."""

import csv
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import lopt
import lopt.learned
from lopt.evaluate import evaluate, load, make_suite, resolve, runner, search_spec, train_cells

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import tiny_suite


@pytest.fixture
def count_traces(monkeypatch):
    """Counts how often lopt.inner.train is traced (once per compiled training program)."""
    calls = []
    original = lopt.inner.train

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lopt.inner, "train", counting)
    return calls


def test_a_15_point_adam_grid_with_seeds_is_one_compiled_program(count_traces):
    task = lopt.tasks.build({"family": "quadratic", "dim": 3})
    spec = search_spec("adam_lr_grid")
    assert len(spec.settings) == 15
    before = runner._train_cells._cache_size()
    curves = train_cells(task, spec, range(15), [0, 1, 2], num_steps=17, eval_every=17, eval_batches=1)
    assert curves.train_loss.shape == (15, 3, 17)
    assert len(count_traces) == 1  # traced once: the 15 learning rates and 3 seeds are vmapped
    assert runner._train_cells._cache_size() == before + 1
    # another task of the same structure and other learning rates reuse the program
    other = lopt.tasks.build({"family": "quadratic", "dim": 3, "seed": 5})
    train_cells(other, search_spec("adam_lr_grid"), range(15), [3, 4, 5], num_steps=17, eval_every=17,
                eval_batches=1)
    assert len(count_traces) == 1 and runner._train_cells._cache_size() == before + 1
    # the grid really differs: the largest learning rate ends elsewhere than the smallest
    final = np.asarray(curves.test_loss[:, :, -1]).mean(axis=1)
    assert not np.allclose(final[0], final[-1])


def test_seeds_give_every_optimizer_the_same_initial_params():
    suite = tiny_suite(num_tasks=1)
    task = lopt.tasks.build(suite.tasks[0].config)
    a = train_cells(task, resolve("adam"), [0], [0, 1], num_steps=12, eval_every=6, eval_batches=1)
    b = train_cells(task, resolve("sgd:learning_rate=0.05"), [0], [0, 1], num_steps=12, eval_every=6,
                    eval_batches=1)
    np.testing.assert_allclose(a.test_loss[0, :, 0], b.test_loss[0, :, 0])  # same init per seed
    assert a.test_loss[0, 0, 0] != a.test_loss[0, 1, 0]  # different seeds differ


def _rows(directory):
    with open(Path(directory) / "results.csv") as f:
        return sorted(tuple(r) for r in csv.reader(f))


def test_interrupted_evaluation_resumes_without_redoing_finished_cells(tmp_path):
    suite = tiny_suite(num_tasks=2, num_tuning=1)
    candidates = [resolve("sgd:learning_rate=0.1")]
    kwargs = {"baselines": "adam_global,adam_per_task", "grid_size": 3}
    first_run = []

    def stop_after_two_jobs(job, done):
        first_run.append((job.task.id, job.spec.label))
        if len(first_run) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(suite, candidates, tmp_path / "run", progress=stop_after_two_jobs, **kwargs)
    second_run = []
    evaluate(suite, candidates, tmp_path / "run", progress=lambda job, done: second_run.append(
        (job.task.id, job.spec.label, job.num_cells)), **kwargs)
    # 2 tasks x (sgd, grid) + the grid on 1 tuning task = 5 jobs; 2 were done before the interrupt
    assert len(second_run) == 3
    assert not {(t, label) for t, label, _ in second_run} & set(first_run)
    third_run = []
    evaluate(suite, candidates, tmp_path / "run", progress=lambda job, done: third_run.append(job), **kwargs)
    assert third_run == []  # everything finished: nothing recomputed
    evaluate(suite, candidates, tmp_path / "straight", **kwargs)
    assert _rows(tmp_path / "run") == _rows(tmp_path / "straight")


def test_adding_an_optimizer_to_a_results_directory_runs_only_the_new_cells(tmp_path):
    suite = tiny_suite(num_tasks=2)
    evaluate(suite, [resolve("adam")], tmp_path, baselines="adam_per_task", grid_size=3)
    jobs = []
    evaluate(suite, [resolve("sgd:learning_rate=0.1")], tmp_path, baselines="adam_per_task", grid_size=3,
             progress=lambda job, done: jobs.append(job.spec.label))
    assert jobs == ["sgd:learning_rate=0.1"] * 2
    assert {label for _, label, _ in load(tmp_path).runs} == {"adam", "sgd:learning_rate=0.1", "adam_lr_grid"}


def test_a_saved_learned_optimizer_is_evaluated_and_a_new_theta_does_not_recompile(tmp_path, count_traces):
    # learnable_adam at its initial theta is Adam(1e-3): the two must train identically.
    architecture = lopt.learned.get("learnable_adam")
    theta = architecture.init(jax.random.key(0))
    path = lopt.learned.save_theta(tmp_path / "ckpt.safetensors", architecture, theta)
    suite = tiny_suite(num_tasks=2)
    spec = resolve(str(path))
    assert spec.label == "ckpt" and spec.source["checkpoint"].endswith("ckpt.safetensors")
    evaluate(suite, [spec, resolve("adam")], tmp_path / "out", baselines="none")
    results = load(tmp_path / "out")
    key = results.header["optimizers"]["adam"]["settings"][0]
    for task in suite.tasks:
        learned = results.run(task.id, "ckpt", "{}")
        adam = results.run(task.id, "adam", key)
        np.testing.assert_allclose(learned.train_loss, adam.train_loss, rtol=2e-4)
    traces = len(count_traces)
    faster = dict(theta, log_lr=theta["log_lr"] + 1.0)
    lopt.learned.save_theta(tmp_path / "other" / "theta.safetensors", architecture, faster)
    other = resolve(str(tmp_path / "other"))  # a `lopt train` output directory
    assert other.label == "other"
    evaluate(suite, [other], tmp_path / "out", baselines="none")
    assert len(count_traces) == traces  # theta is an argument of the program, not a constant
    results = load(tmp_path / "out")
    assert not np.allclose(results.run(suite.tasks[0].id, "other", "{}").train_loss,
                           results.run(suite.tasks[0].id, "ckpt", "{}").train_loss)


def test_mlp_learned_optimizer_gets_the_horizon_and_trains(tmp_path):
    suite = tiny_suite(num_tasks=1)
    evaluate(suite, [resolve("mlp")], tmp_path, baselines="none")
    run = load(tmp_path).run(suite.tasks[0].id, "mlp@init", "{}")
    assert run.train_loss.shape == (suite.num_seeds, suite.num_steps)
    assert np.isfinite(run.train_loss).all()


def test_random_search_baselines_use_the_same_settings_on_every_task(tmp_path):
    suite = tiny_suite(num_tasks=2, num_tuning=1)
    evaluate(suite, [], tmp_path, baselines="nadamw_per_task,nadamw_global", num_trials=3)
    results = load(tmp_path)
    settings = results.header["optimizers"]["nadamw_search"]["settings"]
    assert len(settings) == 3
    for task in suite.tasks + suite.tuning_tasks:
        assert all(results.run(task.id, "nadamw_search", s) is not None for s in settings)


def test_quick_suite_tasks_share_one_structure():
    suite = make_suite("iid", quick=True, num_tasks=2)  # digits and synthetic (no Fashion-MNIST loading)
    specs = {lopt.tasks.build(t.config).spec for t in suite.tasks}
    assert len(specs) == 1 and len({t.id for t in suite.tasks}) == len(suite.tasks)


def test_labels_must_not_clash_with_baselines_or_each_other():
    from lopt.evaluate import optimizer_specs, parse_baselines

    baselines = parse_baselines("adam_per_task")
    with pytest.raises(ValueError, match="name of a baseline"):
        optimizer_specs([resolve("adam", label="adam_per_task")], baselines)
    with pytest.raises(ValueError, match="reserved"):
        optimizer_specs([resolve("adam", label="adam_lr_grid")], baselines)
    with pytest.raises(ValueError, match="distinct labels"):
        optimizer_specs([resolve("adam"), resolve("adam")], baselines)
