"""``lopt.learned.reconfigure``: a theta file's weights under a changed config, in a new file."""

import jax
import numpy as np
import pytest

import lopt
from lopt import checkpoint
from lopt.learned.reconfigure import main, parse_assignments, reconfigure


@pytest.fixture
def source(tmp_path):
    nominal = lopt.learned.get("nominal", step_size="distance")
    theta = jax.tree.map(lambda x: x + 0.25, nominal.init(jax.random.key(3)))
    path = tmp_path / "source.safetensors"
    lopt.learned.save_theta(path, nominal, theta, extra={"campaign_outer_steps": 3779})
    return path


def test_new_file_keeps_the_weights_and_records_the_change(source, tmp_path):
    before = source.read_bytes()
    target = tmp_path / "relative.safetensors"
    reconfigure(source, target, {"relative_initial_distance": 1e-4, "update_clip": 5.0})
    theta, changed = lopt.learned.load_theta(target)
    original, nominal = lopt.learned.load_theta(source)
    assert changed.relative_initial_distance == 1e-4 and changed.update_clip == 5.0
    assert changed.step_size == nominal.step_size == "distance"
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(original)):
        np.testing.assert_array_equal(a, b)
    extra = checkpoint.read_metadata(target)["extra"]
    assert extra["campaign_outer_steps"] == 3779
    assert extra["reconfigured_from"] == {"digest": checkpoint.stored_digest(source),
                                          "changes": {"relative_initial_distance": 1e-4, "update_clip": 5.0}}
    assert source.read_bytes() == before  # the source is untouched


def test_refuses_to_overwrite_unknown_fields_bad_values_and_new_shapes(source, tmp_path):
    target = tmp_path / "t.safetensors"
    target.write_text("a user's file")
    with pytest.raises(FileExistsError, match="never overwritten"):
        reconfigure(source, target, {"update_clip": 5.0})
    assert target.read_text() == "a user's file"
    fresh = tmp_path / "u.safetensors"
    with pytest.raises(ValueError, match="no config field 'learning_rate'"):
        reconfigure(source, fresh, {"learning_rate": 1.0})
    with pytest.raises(ValueError, match="relative_initial_distance=-1"):
        reconfigure(source, fresh, {"relative_initial_distance": -1})
    with pytest.raises(ValueError, match="other shapes"):
        reconfigure(source, fresh, {"hidden_size": 4})
    with pytest.raises(ValueError, match="no changes"):
        reconfigure(source, fresh, {})
    assert not fresh.exists()


def test_command_line(source, tmp_path, capsys):
    target = tmp_path / "cli.safetensors"
    assert main([str(source), str(target), "relative_initial_distance=1e-4", "step_size=distance"]) == 0
    assert lopt.learned.load_theta(target)[1].relative_initial_distance == 1e-4
    with pytest.raises(SystemExit):
        main([str(source), str(tmp_path / "x.safetensors"), "relative_initial_distance"])
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert parse_assignments(["a=[1, 2]", "b=x=y"]) == {"a": [1, 2], "b": "x=y"}
