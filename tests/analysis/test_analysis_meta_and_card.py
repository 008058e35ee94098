"""Meta-gradient diagnostics on a chaotic task, and the optimizer card end to end (tiny settings)."""

import json

import jax
import numpy as np
import pytest

import lopt
from lopt import analysis
from lopt.cli import main


def test_backprop_variance_explodes_on_a_chaotic_task_while_pes_grows_slowly():
    task = analysis.DoubleWellTask.make(dim=4)
    subject = analysis.as_subject(lopt.learned.get("learnable_sgdm", lr=1.45, momentum=0.01))
    result = analysis.meta_gradient_diagnostics(subject, task, key=jax.random.key(0), unroll_lengths=(8, 16, 32, 64),
                                                num_samples=8, num_offsets=9, power_iterations=10)
    assert result.lyapunov_exponent() > 0.05  # positive Lyapunov exponent: chaos
    # Backprop's variance grows exponentially (~T^24 over 8..64 steps); PES's and ES's polynomially.
    assert result.growth_rate("bptt") > 10 * result.growth_rate("pes") > 0
    assert result.variance["bptt"][-1] > 1e12 * result.variance["pes"][-1]
    assert result.growth_rate("es") < 2.0  # ES sees only the bounded loss
    # BPTT with truncations of K = 10 steps cannot explode: its chains are 10 steps long.
    assert result.variance["tbptt"][-1] < 1e3 * result.variance["tbptt"][0]
    assert np.isfinite(result.slice_losses).all() and result.slice_losses.shape == (3, 9)
    # With K >= T, tbptt is bptt and truncated ES/PES are full-unroll ES: same samples, same numbers.
    np.testing.assert_allclose(result.variance["tbptt"][0], result.variance["bptt"][0], rtol=1e-5)
    np.testing.assert_allclose(result.variance["pes"][0], result.variance["es"][0], rtol=1e-5)


def test_card_command_writes_a_readable_card(tmp_path):
    out = tmp_path / "card"
    task = json.dumps({"family": "quadratic", "dim": 4})
    assert main(["card", "optax.sgd:learning_rate=0.1", "--out", str(out), "--steps", "100", "--seeds", "1",
                 "--task", task]) == 0
    text = (out / "card.md").read_text()
    for png in ("update_function", "clipping", "timescales", "schedule", "adaptation", "rest_drift",
                "implicit_regularization"):
        assert (out / f"{png}.png").stat().st_size > 10_000 and f"({png}.png)" in text
    assert "plain SGD (no memory)" in text and "no saturation" in text and "no step counter" in text
    assert "the update is exactly 0 at every snapshot" in text
    assert "Not applicable: this optimizer has no meta-parameters." in text
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert [r["optimizer"] for r in evaluation["rows"]][1:] == ["adam lr=0.001", "adam lr=0.003", "adam lr=0.01",
                                                                 "adam lr=0.03"]


def test_card_command_reports_bad_input(tmp_path, capsys):
    assert main(["card", "adam", "--out", str(tmp_path), "--task", "{not json"]) == 2
    assert "--task" in capsys.readouterr().err
    assert main(["card", "no_such_optimizer", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["card", "adam"])  # --out is required


def test_card_command_refreshes_its_own_card_and_refuses_another_without_overwrite(tmp_path, capsys):
    out = tmp_path / "card"
    task = ["--steps", "100", "--seeds", "1", "--task", json.dumps({"family": "quadratic", "dim": 4})]
    assert main(["card", "optax.sgd:learning_rate=0.1", "--out", str(out), *task]) == 0
    first = (out / "evaluation.json").read_text()
    # the same optimizer and settings: refreshed in place, the evaluation reused as it was
    assert main(["card", "optax.sgd:learning_rate=0.1", "--out", str(out), *task]) == 0
    assert (out / "evaluation.json").read_text() == first
    # another optimizer: refused, nothing touched
    capsys.readouterr()
    assert main(["card", "optax.sgd:learning_rate=0.2", "--out", str(out), *task]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "evaluation.json").read_text() == first
    assert not list(out.glob("previous-*"))
    # with --overwrite the old card moves into previous-*/ and the new one is written
    assert main(["card", "optax.sgd:learning_rate=0.2", "--out", str(out), *task, "--overwrite"]) == 0
    (backup,) = out.glob("previous-*")
    assert (backup / "evaluation.json").read_text() == first and (backup / "card.md").is_file()
    assert (out / "evaluation.json").read_text() != first and "learning_rate=0.2" in (out / "card.md").read_text()
