"""Configs are validated when loaded (and by --show-config): bad values name their key and the fix."""

import json

import pytest

from lopt.cli import main
from lopt.meta.config import PRESETS, MetaTrainConfig, load_config
from lopt.meta.config_checks import validate_config
from lopt.meta.trainer import MetaTrainer


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    assert validate_config(load_config(name)) == PRESETS[name]()


@pytest.mark.parametrize("override, match", [
    ("final_eval.adam_learning_rates=[]", (r"final_eval.adam_learning_rates=\[\] must be a non-empty list .*"
                                           r"final_eval.enabled=false")),
    ("final_eval.adam_learning_rates=[0.01, -1]", r"adam_learning_rates=\[0.01, -1\] must be a non-empty list"),
    ('final_eval.adam_learning_rates=["fast"]', r"adam_learning_rates=\['fast'\]"),
    ('task.pool_seeds=[1, 1]', r"task.pool_seeds=\[1, 1\] must be a list of distinct ints"),
    ('task.pool_seeds=["a"]', r"task.pool_seeds=\['a'\]"),
    ('task.mixture={"mlp": 0}', r"task.mixture=\{'mlp': 0\} must map family names to weights > 0"),
    ('task.mixture={"nope": 1}', r"unknown families \['nope'\]"),
    ('task.heldout_families=["conv"]', r"task.heldout_families is set but task.mixture is empty"),
    ("final_eval.seeds=0", r"final_eval.seeds=0 must be >= 1; set --set final_eval.seeds="),
    ("trainer.eval_tasks=0", r"trainer.eval_tasks=0 must be >= 1"),
    ("estimator.std=0", r"estimator.std=0.0 must be a finite number > 0"),
    ("outer.learning_rate=nan", r"outer.learning_rate=nan must be a finite number > 0"),
    ("estimator.objective=test", r"estimator.objective='test' is unknown; use one of \['train', 'valid'\]"),
    ("estimator.episode_weighting=final",
     r"estimator.episode_weighting='final' is unknown; use one of \['uniform', 'linear'\]"),
    ("outer.bucket_weighting=sum", r"outer.bucket_weighting='sum' is unknown; use one of \['mean', 'unit', 'pcgrad'\]"),
    ("task.heldout_seed=-2", r"task.heldout_seed=-2 must be an int >= 0 \(or -1: the run's seed\)"),
    ("estimator.kind=nes", r"estimator.kind='nes' is unknown"),
    ('lopt.config={"nope": 1}', r"^lopt: .*nope"),
    ("lopt.name=nope", r"^lopt: .*nope"),
    ("truncation.kind=sometimes", r"^truncation: truncation kind 'sometimes' is unknown"),
    ("task.family=nope", r"^task.family: Unknown task family 'nope'"),
    ('task.config={"hidden_sizes": 3}', r"^task.config: "),
    ("outer.optimizer=nope", r"^outer: "),
])
def test_bad_values_are_rejected_at_load_time(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("quickstart", [override])


def test_an_empty_baseline_list_is_accepted_while_the_comparison_is_off():
    cfg = load_config("quickstart", ["final_eval.enabled=false", "final_eval.adam_learning_rates=[]"])
    assert cfg.final_eval.adam_learning_rates == []


def test_show_config_validates(capsys):
    assert main(["train", "--show-config", "--set", "final_eval.adam_learning_rates=[]"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no invalid config printed
    assert "lopt train: error: final_eval.adam_learning_rates=[] must be a non-empty list" in captured.err
    assert main(["train", "--show-config", "--set", "final_eval.adam_learning_rates=[0.1]"]) == 0
    assert json.loads(capsys.readouterr().out)["final_eval"]["adam_learning_rates"] == [0.1]


def test_configs_built_in_python_are_checked_before_the_run_touches_its_directory(tmp_path):
    cfg = MetaTrainConfig()
    cfg.final_eval.adam_learning_rates = []
    with pytest.raises(ValueError, match="final_eval.adam_learning_rates"):
        MetaTrainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_config_json_with_a_bad_value_is_refused(tmp_path):
    data = load_config("quickstart").to_dict()
    data["trainer"]["checkpoint_every"] = 0
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="trainer.checkpoint_every=0 must be >= 1"):
        load_config(str(tmp_path / "config.json"))
