"""The campaign's rewind: the next session's warm start becomes an earlier theta, nothing is lost."""

import json

import jax
import numpy as np
import pytest

from lopt import checkpoint
from lopt.learned import get as get_lopt
from lopt.learned.serialization import save_theta
from lopt.meta.warm_start import load_warm_start
from lopt.pretrained.campaign import main as campaign_main
from lopt.pretrained.rewind import rewind


def _campaign(tmp_path, steps=300):
    lopt_ = get_lopt("nominal")
    trained = jax.tree.map(lambda x: x + 0.01, lopt_.init(jax.random.key(0)))
    save_theta(tmp_path / "warm_start.safetensors", lopt_, trained, extra={"outer_steps": 100})
    (tmp_path / "state.json").write_text(json.dumps({"sessions": [{"start_outer_step": 0}], "outer_steps": steps}))
    snapshot = tmp_path / "theta-000120.safetensors"
    save_theta(snapshot, lopt_, jax.tree.map(lambda x: x - 0.02, trained), extra={"campaign_outer_steps": 120})
    return lopt_, trained, snapshot


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_rewind_to_a_snapshot_keeps_the_replaced_warm_start_and_records_it(tmp_path):
    lopt_, trained, snapshot = _campaign(tmp_path)
    old_digest = checkpoint.stored_digest(tmp_path / "warm_start.safetensors")
    entry = rewind(str(tmp_path), str(snapshot), note="validation drifted")
    theta, outer, meta = load_warm_start(tmp_path / "warm_start.safetensors", lopt_)
    expected = jax.tree.map(lambda x: x - 0.02, trained)
    for a, b in zip(_leaves(theta), _leaves(expected)):
        np.testing.assert_array_equal(a, b)
    assert outer is None  # the next session's outer optimizer starts fresh
    assert meta["extra"] == {"rewound_at": 300, "campaign_outer_steps": 120}
    kept = tmp_path / "rewound" / "warm_start-000300.safetensors"
    assert checkpoint.stored_digest(kept) == old_digest
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["rewinds"] == [entry] and entry["to_campaign_step"] == 120 and entry["at_outer_step"] == 300
    assert entry["note"] == "validation drifted" and state["outer_steps"] == 300 and len(state["sessions"]) == 1
    # a second rewind with no session in between replaces the warm start (the last rewind's theta,
    # named by its record) and keeps nothing: the file kept by the first rewind stays as it was
    again = rewind(str(tmp_path), "initial", note="changed my mind")
    assert again["kept_warm_start"] is None and again["to_campaign_step"] == 0
    assert checkpoint.stored_digest(kept) == old_digest
    # a warm start that changed since (trained, not yet recorded) cannot be kept: refused, nothing changed
    save_theta(tmp_path / "warm_start.safetensors", lopt_, trained, extra={"outer_steps": 300})
    changed = checkpoint.stored_digest(tmp_path / "warm_start.safetensors")
    with pytest.raises(ValueError, match="already rewound at outer step 300"):  # would overwrite the kept file
        rewind(str(tmp_path), "initial")
    assert checkpoint.stored_digest(kept) == old_digest
    assert checkpoint.stored_digest(tmp_path / "warm_start.safetensors") == changed


def test_rewind_to_the_initial_theta_from_the_command_line(tmp_path, capsys):
    lopt_, _, _ = _campaign(tmp_path)
    assert campaign_main(["--state", str(tmp_path), "--rewind", "initial"]) == 0
    assert "rewound the campaign at outer step 300" in capsys.readouterr().out
    theta, _, meta = load_warm_start(tmp_path / "warm_start.safetensors", lopt_)
    for a, b in zip(_leaves(theta), _leaves(lopt_.init(jax.random.key(0)))):
        np.testing.assert_array_equal(a, b)
    assert meta["extra"]["campaign_outer_steps"] == 0


def test_rewind_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="has no state.json"):
        rewind(str(tmp_path), "initial")
    _campaign(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rewind(str(tmp_path), str(tmp_path / "nope.safetensors"))
    assert not (tmp_path / "rewound").exists()


def test_the_shipped_header_counts_only_the_sessions_a_theta_descends_from(tmp_path):
    from lopt.pretrained.shipping import lineage_sessions

    _campaign(tmp_path, steps=300)
    state = json.loads((tmp_path / "state.json").read_text())
    state["sessions"] = [{"start_outer_step": 0, "seconds": 60}, {"start_outer_step": 120, "seconds": 120},
                         {"start_outer_step": 300, "seconds": 240}, {"start_outer_step": 400, "seconds": 30}]
    state["outer_steps"] = 300
    (tmp_path / "state.json").write_text(json.dumps(state))
    rewind(str(tmp_path), str(tmp_path / "theta-000120.safetensors"))  # at 300, back to step 120
    state = json.loads((tmp_path / "state.json").read_text())
    starts = lambda step: [s["start_outer_step"] for s in lineage_sessions(state, step)]
    assert starts(120) == [0] and starts(300) == [0, 120]  # before the rewind: everything before the step
    assert starts(350) == [0, 300] and starts(500) == [0, 300, 400]  # after it: step 120's line, then 300 on
    state["rewinds"].append({"at_outer_step": 380, "to_campaign_step": 0})
    assert starts(500) == [400]  # a rewind to the initial theta drops every earlier session


def test_shipping_a_hand_edited_theta_keeps_its_step_lineage_and_note(tmp_path):
    from lopt.pretrained.shipping import ship

    lopt_, _, _ = _campaign(tmp_path, steps=300)
    state = json.loads((tmp_path / "state.json").read_text())
    state["sessions"] = [{"start_outer_step": 0, "seconds": 60, "device": "NVIDIA H200"},
                         {"start_outer_step": 200, "seconds": 90, "device": "NVIDIA H200"}]
    (tmp_path / "state.json").write_text(json.dumps(state))
    edited = tmp_path / "edited.safetensors"
    save_theta(edited, lopt_, lopt_.init(jax.random.key(0)),
               extra={"campaign_outer_steps": 120, "note": "schedule tail lowered by hand"})
    out = tmp_path / "weights"
    path = ship(str(tmp_path), theta_path=str(edited), name="candidate", directory=str(out))
    assert path == str(out / "candidate.safetensors")
    extra = checkpoint.read_metadata(path)["extra"]
    assert extra["campaign_outer_steps"] == 120 and extra["note"] == "schedule tail lowered by hand"
    assert extra["source"] == "edited.safetensors" and extra["gpu_minutes"] == 1.0  # only the session before 120
    assert "reconfigured_from" not in extra


def test_shipping_a_reconfigured_theta_records_the_change(tmp_path):
    from lopt.learned.reconfigure import reconfigure
    from lopt.pretrained.shipping import ship

    lopt_, _, _ = _campaign(tmp_path, steps=300)
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**state, "sessions": []}))
    source = tmp_path / "source.safetensors"
    save_theta(source, lopt_, lopt_.init(jax.random.key(0)), extra={"campaign_outer_steps": 120, "note": "by hand"})
    changed = reconfigure(source, tmp_path / "anchored.safetensors", {"anchored_direction": True})
    extra = checkpoint.read_metadata(ship(str(tmp_path), theta_path=str(changed), directory=str(tmp_path / "w")))["extra"]
    assert extra["note"] == "by hand" and extra["campaign_outer_steps"] == 120
    assert extra["reconfigured_from"] == {"digest": checkpoint.stored_digest(source),
                                          "changes": {"anchored_direction": True}}


def test_docstring_examples_run():
    import doctest

    from lopt.pretrained import rewind as rewind_module
    from lopt.pretrained import shipping, validate

    for module in (rewind_module, shipping, validate):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_rewind_to_another_config_starts_a_line_that_sessions_train(tmp_path):
    from lopt.learned import NominalLOpt
    from lopt.pretrained.campaign import _read_state, campaign_config

    _campaign(tmp_path)
    distance = NominalLOpt(step_size="distance")
    source = tmp_path / "initial_distance.safetensors"
    save_theta(source, distance, distance.init(jax.random.key(0)))
    rewind(str(tmp_path), str(source), note="new line: distance-adaptive step")
    warm = str(tmp_path / "warm_start.safetensors")
    state = _read_state(str(tmp_path))
    state["structures"] = []
    cfg = campaign_config(state, minutes=1.0, init_from=warm, overrides=['lopt.config={"concatenate_tensors": true}'])
    assert cfg.lopt.name == "nominal"
    assert cfg.lopt.config["step_size"] == "distance" and cfg.lopt.config["lr"] == 1.0
    assert cfg.lopt.config["concatenate_tensors"] is True  # the session's execution option is kept
    theta, _, _ = load_warm_start(warm, get_lopt("nominal", **cfg.lopt.config))
    for a, b in zip(_leaves(theta), _leaves(distance.init(jax.random.key(0)))):
        np.testing.assert_array_equal(a, b)
    # the old line's warm start (adam) is kept, and it still loads with its own config
    kept = tmp_path / "rewound" / "warm_start-000300.safetensors"
    load_warm_start(kept, get_lopt("nominal"))
