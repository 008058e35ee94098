"""The self-training benchmark's ``--config mixture`` option (benchmarks/self_training*.py)."""

import argparse
import os
import sys

import numpy as np
import pytest

import lopt
from lopt.tasks.mixture import base_family

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import self_training
from self_training_mixture import mixture_overrides, parse_families, structure


def test_mixture_config_trains_the_asked_families_and_holds_out_variants():
    cfg = lopt.meta.load_config("canonical", mixture_overrides("quadratic,mlp,losg", heldout_per_bucket=2))
    assert cfg.task.mixture == {"quadratic": 1, "mlp": 1, "losg": 1}
    assert [base_family(s) for s in cfg.task.structures] == ["quadratic", "mlp", "losg"]
    assert cfg.task.num_buckets == 3 and cfg.task.heldout_per_bucket == 2 and cfg.task.heldout_seed == 0
    # canonical's estimator and horizons are kept; redraws cover the whole 1,000-step episode
    assert (cfg.estimator.kind, cfg.estimator.unroll_length, cfg.truncation.horizon) == ("pes", 50, 1000)
    assert cfg.task.redraw_every * cfg.estimator.unroll_length >= cfg.truncation.horizon
    # the mlp bucket is the canonical task itself (MLP 64-32-10 on 8x8 images)
    canonical = lopt.meta.load_config("canonical").task
    mlp = structure("mlp")["task"]
    expected = lopt.tasks.get("mlp").complete({**canonical.config, "dataset": mlp["dataset"]}).to_dict()
    assert mlp == expected
    # every structure has room for its held-out variants next to two pool halves of training variants
    dist = lopt.tasks.mixture(cfg.task.mixture, seed=cfg.seed)
    for s in cfg.task.structures:
        held = dist.variants(s, 0, cfg.task.heldout_per_bucket)
        assert len(set(held)) == 2 and {lopt.tasks.structure_key(c) for c in held} == {lopt.tasks.structure_key(s)}
        assert dist.num_variants(s) > 2 * cfg.task.configs_per_bucket + cfg.task.heldout_per_bucket


@pytest.mark.parametrize("families, heldout, match", [
    ("", 2, "names no family"),
    ("quadratic,conv_pooling", 2, r"\['conv_pooling'\] have no CPU-sized structure.*use some of"),
    ("mlp,mlp", 2, "repeats a family"),
    ("quadratic", 0, "held-out variants.*integer >= 1"),
])
def test_bad_mixture_settings_name_the_fix(families, heldout, match):
    with pytest.raises(ValueError, match=match):
        mixture_overrides(families, heldout_per_bucket=heldout)


def test_bad_families_fail_before_any_run(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["self_training.py", "--config", "mixture", "--families", "quadratic,nope"])
    monkeypatch.setattr(self_training, "run_one", lambda *a: pytest.fail("a run started"))
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        self_training.main()
    assert parse_families(" losg , quadratic ") == ["losg", "quadratic"]


@pytest.mark.slow  # 6 programs to compile (PES, normaliser fit, evaluation x 2): ~30 s cold, ~6 s from the XLA cache
def test_a_tiny_mixture_run_reports_held_out_scores_per_family():
    args = argparse.Namespace(config="mixture", families="quadratic,losg", heldout_per_bucket=1, num_tasks=1,
                              outer_steps=2, eval_every=2, eval_tasks=1, eval_steps=20)
    run = self_training.run_one("learnable_adam", "adam:0.001", 0, args)
    assert len(run["meta_loss"]) == 2 and np.all(np.isfinite(run["meta_loss"]))
    assert run["eval_steps"] == [2]
    per_family = run["heldout_per_family"]
    assert sorted(per_family) == ["losg", "quadratic"] and sorted(run["meta_loss_per_family"]) == ["losg", "quadratic"]
    # one held-out variant per structure: the overall score is the mean of the two families' scores
    assert run["eval_normalized_loss"][0] == pytest.approx(np.mean([v[0] for v in per_family.values()]))


def _run(outer, seed, curve, heldout, per_family=None):
    return {"lopt": "learnable_adam", "outer": outer, "seed": seed, "smoothed_meta_loss": curve, "meta_loss": curve,
            "eval_normalized_loss": [heldout], "heldout_per_family": per_family or {}}


def test_combine_pools_seeds_from_several_files(tmp_path):
    import json
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"runs": [
        _run("adam:0.001", 0, [0.5, 0.4], 0.30, {"mlp": [0.2], "quadratic": [0.4]}),
        _run("pretrained", 0, [0.5, 0.2], 0.10, {"mlp": [0.1], "quadratic": [0.1]})]}))
    second.write_text(json.dumps({"runs": [
        _run("adam:0.001", 1, [0.5, 0.2], 0.20, {"mlp": [0.4], "quadratic": [0.0]}),
        _run("pretrained", 1, [0.3, 0.3], 0.25, {"mlp": [0.3], "quadratic": [0.2]})]}))
    table = self_training.combine([str(first), str(second)])["learnable_adam"]
    adam, learned = table["rows"]["adam:0.001"], table["rows"]["pretrained"]
    assert table["reference_final_meta_loss"] == pytest.approx(0.3)  # Adam 1e-3's mean final meta-loss
    assert adam["seeds"] == [0, 1] and adam["final_meta_loss_mean"] == pytest.approx(0.3)
    assert adam["final_meta_loss_std"] == pytest.approx(np.std([0.4, 0.2], ddof=1))
    assert adam["steps_to_reference_per_seed"] == [None, 2] and learned["steps_to_reference_per_seed"] == [2, 1]
    assert adam["final_heldout_per_family_mean"] == pytest.approx({"mlp": 0.3, "quadratic": 0.2})
    # seed 0: pretrained lower on both; seed 1: higher meta-loss (0.3 > 0.2), higher held-out (0.25 > 0.2)
    assert adam["pretrained_wins"] == {"seeds": 2, "meta_loss": 1, "heldout": 1}
    assert adam["paired_meta_loss_gap_per_seed"] == [0.0, 0.0]
    assert learned["paired_meta_loss_gap_per_seed"] == pytest.approx([-0.1, -0.05])


def test_paired_gap_compares_runs_of_one_seed_step_by_step():
    run = {"meta_loss": [9.0, 0.5, 0.25, float("nan")]}
    reference = {"meta_loss": [0.0, 1.0, 0.75, 1.0]}
    # last three steps: 0.5 - 1.0, 0.25 - 0.75, and a NaN step left out
    assert self_training.paired_gap(run, reference, last=3) == pytest.approx(-0.5)
