"""`lopt tasks`: every family with parameter counts, sampled configs, timings and the taskset."""

from __future__ import annotations

import json

import lopt
from lopt.cli import main


def test_listing_shows_every_family_with_its_default_parameter_count(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in lopt.tasks.names():
        assert name in out
    assert "49,920" in out  # nvp's default config


def test_family_json_with_samples_and_timings(capsys):
    assert main(["tasks", "--family", "losg", "--samples", "2", "--seed", "3", "--timings", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["family"] == "losg" and [s["seed"] for s in info["samples"]] == [3, 4]
    for sample in info["samples"]:
        task = lopt.tasks.build(sample["config"])
        assert sample["num_params"] == task.num_params() and sample["flops"] > 0 and sample["step_ms"] > 0


def test_listing_with_sample_ranges(capsys):
    assert main(["tasks", "--samples", "2", "--json"]) == 0
    infos = {info["family"]: info for info in json.loads(capsys.readouterr().out)}
    assert len(infos["mlp_ae"]["samples"]) == 2 and infos["maf"]["default"]["num_params"] > 0


def test_taskset_summary_and_compile_arithmetic(capsys):
    assert main(["tasks", "--taskset", "--families", "quadratic,losg", "--structures", "2", "--no-budget",
                 "--buckets", "3", "--per-bucket", "4", "--outer-steps", "100", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["structures"] == 4 and summary["run"]["compiles"] == 3
    assert summary["run"]["configs_fixed_buckets"] == 12 and summary["run"]["configs_redrawn_variants"] == 400
    assert main(["tasks", "--taskset", "--families", "losg", "--structures", "1", "--no-budget"]) == 0
    assert "compiles 1 program (one per bucket" in capsys.readouterr().out


def test_bad_options_are_one_line_errors(capsys):
    assert main(["tasks", "--taskset", "--buckets", "0"]) == 2
    assert "--buckets=0 must be >= 1" in capsys.readouterr().err
    assert main(["tasks", "--taskset", "--families", "resnet"]) == 2
    assert "Unknown task family 'resnet'" in capsys.readouterr().err
