"""Population self-training: bookkeeping on synthetic scores, a real run, resume equality, the CLI."""

import json

import jax
import numpy as np
import pytest

import lopt
from lopt.cli import main
from lopt.meta.config import MetaTrainConfig
from lopt.meta.population import (
    apply_replacements,
    choose_teachers,
    perturb,
    rank_members,
    replacements,
)
from lopt.meta.selftrain import PERTURB_STREAM, PopulationSettings, SelfTrainer

SETTINGS = PopulationSettings(size=3, generations=2, generation_steps=3, teacher="best", replace=1,
                              init_std=0.5, perturb_std=0.05)


def tiny_config() -> MetaTrainConfig:
    return MetaTrainConfig.from_dict({
        "name": "tiny", "seed": 5,
        "task": {"family": "quadratic", "config": {"dim": 6, "condition_number": 10.0}},
        "lopt": {"name": "learnable_adam", "config": {"lr": 0.01}},
        "estimator": {"kind": "pes", "num_tasks": 2, "std": 0.05, "unroll_length": 5},
        "truncation": {"kind": "constant", "horizon": 15},
        "normalizer": {"enabled": False},
        "trainer": {"eval_tasks": 2, "eval_steps": 10, "checkpoint_minutes": 100.0},
    })


# --- bookkeeping on synthetic scores -----------------------------------------------------------

def test_ranking_puts_nan_and_inf_last_and_breaks_ties_by_index():
    assert rank_members([0.5, np.nan, 0.2, 0.5, np.inf, -1.0]).tolist() == [5, 2, 0, 3, 1, 4]


def test_replacements_pair_worst_with_best():
    scores = [0.4, 0.1, 0.9, np.nan, 0.2, 0.3]
    assert replacements(scores, 2) == {3: 1, 2: 4}
    assert replacements(scores, 0) == {}
    with pytest.raises(ValueError, match="more than half"):
        replacements(scores, 4)
    with pytest.raises(ValueError, match="non-negative int"):
        replacements(scores, -1)
    with pytest.raises(ValueError, match="non-empty"):
        replacements([], 0)


def test_teachers_best_self_random():
    scores = [0.3, 0.2, 0.7]
    assert choose_teachers(scores, "best", seed=0, generation=4) == [1, 1, 1]
    assert choose_teachers(scores, "self", seed=0, generation=4) == [0, 1, 2]
    draws = [tuple(choose_teachers(scores, "random", seed=1, generation=g)) for g in range(30)]
    assert draws == [tuple(choose_teachers(scores, "random", seed=1, generation=g)) for g in range(30)]  # repeatable
    assert len(set(draws)) > 10 and {i for d in draws for i in d} == {0, 1, 2}
    with pytest.raises(ValueError, match="teacher='worst'"):
        choose_teachers(scores, "worst", seed=0, generation=0)


def test_copy_and_perturb():
    members = [{"a": np.full(2, float(i))} for i in range(4)]
    copied = apply_replacements(members, {3: 0, 2: 1})
    assert [m["a"][0] for m in copied] == [0.0, 1.0, 1.0, 0.0]
    assert [m["a"][0] for m in members] == [0.0, 1.0, 2.0, 3.0]  # the input list is not changed
    with pytest.raises(ValueError, match="outside a population of 4"):
        apply_replacements(members, {4: 0})
    theta = {"w": np.zeros((200, 50), np.float32), "b": np.float32(1.0)}
    noisy = perturb(theta, 0.1, key=jax.random.key(0))
    assert abs(float(np.std(noisy["w"])) - 0.1) < 0.005 and abs(float(np.mean(noisy["w"]))) < 0.005
    assert noisy["w"].dtype == np.float32
    same = perturb(theta, 0.0, key=jax.random.key(0))
    np.testing.assert_array_equal(same["w"], theta["w"])
    with pytest.raises(ValueError, match="std=-1"):
        perturb(theta, -1.0, key=jax.random.key(0))


@pytest.mark.parametrize("change, match", [
    ({"size": 1}, "size=1 must be >= 2"), ({"replace": 2, "size": 3}, "replace=2 must be <= size // 2 = 1"),
    ({"teacher": "sgd"}, "teacher='sgd' is unknown"), ({"teacher": "adam:-1"}, "positive learning rate"),
    ({"generations": 0}, "generations=0 must be a positive int"), ({"init_std": -0.1}, "init_std=-0.1"),
])
def test_bad_settings_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        PopulationSettings(**change)


def test_mixture_and_outer_overrides_are_refused(tmp_path):
    cfg = tiny_config()
    cfg.outer.optimizer = "pretrained"
    with pytest.raises(ValueError, match="population teacher setting"):
        SelfTrainer(cfg, SETTINGS, tmp_path, progress=False)
    cfg = tiny_config()
    cfg.task.mixture = {"quadratic": 1.0}
    with pytest.raises(ValueError, match="single-family"):
        SelfTrainer(cfg, SETTINGS, tmp_path, progress=False)
    cfg = tiny_config()
    cfg.outer.trainable = "log_lr"
    with pytest.raises(ValueError, match="outer.trainable='log_lr'.*perturbs every leaf"):
        SelfTrainer(cfg, SETTINGS, tmp_path, progress=False)


# --- a real run, and its resume --------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("selftrain") / "full"
    trainer = SelfTrainer(tiny_config(), SETTINGS, out, progress=False)
    return trainer, trainer.run(), out


def _member_leaves(out):
    return [[np.asarray(x) for x in jax.tree.leaves(lopt.learned.load_theta(out / "population" / f"member_{i:02d}.safetensors")[0])]
            for i in range(SETTINGS.size)]


def test_population_run_selects_teaches_and_copies(full_run):
    trainer, result, out = full_run
    rows = lopt.meta.read_metrics(out / "eval.jsonl")
    assert [r["generation"] for r in rows] == [0, 1, 2] and [r["step"] for r in rows] == [0, 3, 6]
    # the first generation's teacher of every member is the best member of the random initial population
    assert rows[1]["teachers"] == [int(np.argmin(rows[0]["scores"]))] * SETTINGS.size
    assert rows[2]["teachers"] == [rows[1]["best_member"]] * SETTINGS.size
    steps = lopt.meta.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(len(r["meta_loss_members"]) == 3 and np.isclose(r["meta_loss"], np.mean(r["meta_loss_members"]))
               for r in steps)
    # after the last selection the worst member is its source plus exactly the logged perturbation
    (target, source), = ((int(t), s) for t, s in rows[2]["replaced"].items())
    assert source == rows[2]["best_member"] == result["best_member"]
    members = lopt.learned.load_theta(out / "population" / f"member_{source:02d}.safetensors")[0]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(trainer._trainer.root_key, PERTURB_STREAM), 1), target)
    expected = perturb(members, SETTINGS.perturb_std, key=key)
    got = lopt.learned.load_theta(out / "population" / f"member_{target:02d}.safetensors")[0]
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    best, _ = lopt.learned.load_theta(out / "theta.safetensors")
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(members)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    initial = trainer.initial_state()["theta"]  # members start apart (init_std) and theta moved
    assert np.ptp([float(t["log_lr"]) for t in initial]) > 0.1
    assert all(np.isfinite(r["scores"]).all() for r in rows)
    assert (out / "population.png").stat().st_size > 10_000


def test_resume_continues_the_same_trajectory(full_run, tmp_path):
    _, _, full = full_run
    trainer = SelfTrainer(tiny_config(), SETTINGS, tmp_path / "cut", progress=False)
    assert trainer.run(stop_after_generation=1)["generation"] == 1
    assert trainer.run(resume=True)["generation"] == 2
    for a, b in zip(_member_leaves(full), _member_leaves(tmp_path / "cut")):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert lopt.meta.read_metrics(full / "eval.jsonl") == [
        {**r, "seconds": lopt.meta.read_metrics(full / "eval.jsonl")[i]["seconds"]}
        for i, r in enumerate(lopt.meta.read_metrics(tmp_path / "cut" / "eval.jsonl"))]


def test_cli_refuses_to_overwrite_and_to_change_settings_on_resume(full_run, capsys):
    _, _, out = full_run
    config = str(out / "config.json")
    assert main(["selftrain", config, "--out", str(out), "--size", "3", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["selftrain", "--out", str(out), "--resume", "--size", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "population settings cannot change on resume" in err and "'size': [3, 4]" in err
    assert json.loads((out / "population.json").read_text())["size"] == 3


def test_docstring_examples():
    import doctest

    import lopt.meta.population

    assert doctest.testmod(lopt.meta.population).failed == 0
