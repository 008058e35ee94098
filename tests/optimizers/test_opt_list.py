"""The shipped opt_list: every setting builds and trains; the file format checks ranges and digest."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers import get, load_opt_list, opt_list, opt_list_info, save_opt_list, search_space


def test_shipped_list_settings_all_build_valid_nadamw_and_train():
    settings = opt_list()
    assert len(settings) >= 10  # the paper's 10-trial rung fits
    space = search_space("nadamw")
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    for setting in settings:
        assert set(setting) == set(space)
        for name, value in setting.items():
            if name in ("b1", "b2"):  # 1 - x, float32-rounded: x may move by ~1% near the bounds
                assert 0.0 <= value < 1.0
            elif name.endswith("weight_decay") and value == 0.0:  # TaskSet's modes zero one of the decays
                assert setting["adamw_weight_decay"] + setting["l2_weight_decay"] > 0.0
            else:
                assert space[name].contains(value), (name, value)
        opt = get("nadamw", total_steps=100, **setting)
        state = opt.init(params)
        for _ in range(3):  # past any warmup of 0 learning rate at step 0
            updates, state = opt.update(jax.tree.map(lambda p: 2 * p, params), state, params)
        assert np.isfinite(np.asarray(updates["w"])).all()


def test_first_k_is_a_prefix_and_info_has_the_heldout_curve():
    assert opt_list(3) == opt_list()[:3]
    info = opt_list_info()
    n = len(opt_list())
    assert len(info["heldout_best_of_k"]) == n and len(info["heldout_random_best_of_k"]) == n
    assert np.all(np.diff(info["heldout_best_of_k"]) <= 1e-9)  # best-of-k never gets worse with k
    assert info["num_heldout_tasks"] > 0 and info["num_train_tasks"] > info["num_heldout_tasks"]


@pytest.mark.parametrize("k", [0, -1, 10_000, 2.5, True])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match="k="):
        opt_list(k)


def test_save_load_round_trip_and_tampering_is_caught(tmp_path):
    path = save_opt_list(tmp_path / "list.json", opt_list(2), {"note": "x"})
    settings, info = load_opt_list(path)
    assert settings == opt_list(2) and info == {"note": "x"}
    assert opt_list(1, path=path) == opt_list(1)
    doc = json.loads(path.read_text())
    doc["settings"][0]["learning_rate"] *= 2  # still a valid value, but not the learned one
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="SHA-256"):
        load_opt_list(path)


def test_bad_settings_and_files_are_refused(tmp_path):
    good = opt_list(1)[0]
    with pytest.raises(ValueError, match="exactly the NAdamW hyperparameters"):
        save_opt_list(tmp_path / "a.json", [{**good, "momentum": 0.9}])
    with pytest.raises(ValueError, match="not a valid NAdamW setting"):
        save_opt_list(tmp_path / "a.json", [{**good, "b1": 1.5}])
    with pytest.raises(TypeError, match="nesterov"):
        save_opt_list(tmp_path / "a.json", [{**good, "nesterov": 1.0}])
    with pytest.raises(ValueError, match="empty"):
        save_opt_list(tmp_path / "a.json", [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_opt_list(tmp_path / "missing.json")
    (tmp_path / "b.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an opt_list file"):
        load_opt_list(tmp_path / "b.json")
