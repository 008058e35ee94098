"""The meta-training plot reads both evaluation formats: single-structure pools and mixtures."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from lopt.meta.report import plot_meta_training


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("kind", ["pool", "mixture"])
def test_plot_reads_the_evaluation_rows_of_either_kind_of_run(tmp_path, kind):
    _write(tmp_path / "metrics.jsonl", [{"step": s, "meta_loss": 1.0 / s} for s in range(1, 21)])
    if kind == "pool":
        evals = [{"step": s, "eval_normalized_loss": 0.5 / s, "eval_valid_loss": 2.0 / s} for s in (10, 20)]
    else:  # what MixtureEngine.evaluate logs: a mean and one column per family
        evals = [{"step": s, "heldout_normalized_loss": 0.4 / s, "heldout/mlp": 0.3 / s, "heldout/quadratic": 0.5 / s,
                  "heldout_diverged": 0.0, "heldout_configs": 4.0} for s in (10, 20)]
    _write(tmp_path / "eval.jsonl", evals)
    path = plot_meta_training(str(tmp_path))
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
