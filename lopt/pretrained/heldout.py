"""The held-out suite: tasks the pretrained optimizer's campaign never trains on.

The campaign meta-trains on the ``taskset`` mixture with the families ``conv_fc``, ``maf`` and
``word_rnn_lm`` held out (:data:`CAMPAIGN_HELD_OUT_FAMILIES`); ``transformer_lm`` and
``regression`` are not in ``taskset`` at all (:data:`lopt.tasks.mixture.NOT_IN_TASKSET`). Every
task here is unseen in at least one of these ways:

* **held-out families**: a 28x28 ``conv_fc``, a ``maf`` flow, a word-level LSTM language model;
* **attention**: two ``transformer_lm`` character models (1 and 2 blocks);
* **larger sizes** than the training budget (``TASKSET_BUDGET``: 500k params, 2e8 FLOPs per
  step) or its samples: 784-256-256-10 and 784-512-512-512-10 MLPs, a 28x28 ``conv_pooling``
  with a wider last layer;
* **unscaled features**: least squares on raw ``diabetes`` features, linear and MLP;
* **ill-conditioned synthetic problems**: quadratics with condition number 1e6 (training
  samples reach 1e4), the Rosenbrock valley;
* **horizons** from 1,000 to 10,000 inner steps (training horizons are log-uniform up to ~2,000).

Each entry fixes its config and horizon; :func:`suite` returns them, optionally a subset and
with every horizon multiplied by ``steps_scale`` (for a quick CPU check). The benchmark that
trains an optimizer on the suite against tuned Adam is ``benchmarks/pretrained_heldout.py``.

Example:
    >>> from lopt.pretrained import heldout
    >>> len(heldout.names()) >= 12
    True
    >>> [t.num_steps for t in heldout.suite(["losg_rosenbrock"], steps_scale=0.1)]
    [1000]
    >>> heldout.check_unseen(["mlp", "quadratic", "losg"])  # the held-out families are not among them
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lopt.tasks
from lopt.tasks.mixture import NOT_IN_TASKSET

__all__ = ["CAMPAIGN_HELD_OUT_FAMILIES", "HELDOUT_TASKS", "HeldoutTask", "check_unseen", "get", "names", "suite"]

#: Families the pretrained optimizer's campaign leaves out of its ``taskset`` training mixture.
CAMPAIGN_HELD_OUT_FAMILIES = ("conv_fc", "maf", "word_rnn_lm")
#: The shortest horizon :func:`suite` produces when scaling horizons down.
MIN_STEPS = 20


@dataclasses.dataclass(frozen=True)
class HeldoutTask:
    """One task of the held-out suite.

    Attributes:
        name: a short stable name (used for ``--tasks`` and in results).
        config: the task config (what :func:`lopt.tasks.build` takes).
        num_steps: the horizon.
        unseen: why the campaign never trains on it.
    """

    name: str
    config: Mapping[str, Any]
    num_steps: int
    unseen: str

    def build(self) -> lopt.tasks.Task:
        """The task."""
        return lopt.tasks.build(dict(self.config))


def _fashion(family: str, image_size: int = 28, **cfg: Any) -> dict[str, Any]:
    return {"family": family, "dataset": "fashion_mnist", "image_size": image_size, "batch_size": 128, **cfg}


HELDOUT_TASKS: tuple[HeldoutTask, ...] = (
    HeldoutTask("conv_fc_fashion28", _fashion("conv_fc", channels=[32, 64], strides=2, hidden_sizes=[128]),
                2000, "held-out family conv_fc, 28x28"),
    HeldoutTask("maf_fashion8", _fashion("maf", image_size=8, num_layers=4, hidden_sizes=[128]),
                2000, "held-out family maf"),
    HeldoutTask("word_rnn_lm_wordnet_lstm128",
                {"family": "word_rnn_lm", "corpus": "wordnet", "cell": "lstm", "embed_size": 64, "hidden_size": 128,
                 "seq_len": 16, "batch_size": 32, "vocab_size": 2000},
                3000, "held-out family word_rnn_lm"),
    HeldoutTask("transformer_lm_fortunes_1x32",
                {"family": "transformer_lm", "corpus": "fortunes", "seq_len": 32, "d_model": 32, "num_heads": 2,
                 "num_layers": 1, "batch_size": 32},
                5000, "attention (transformer_lm is not in taskset)"),
    HeldoutTask("transformer_lm_fortunes_2x64",
                {"family": "transformer_lm", "corpus": "fortunes", "seq_len": 64, "d_model": 64, "num_heads": 4,
                 "num_layers": 2, "batch_size": 32},
                2000, "attention, 2 blocks"),
    HeldoutTask("mlp_fashion28_256x256", _fashion("mlp", hidden_sizes=[256, 256]),
                3000, "larger than training samples: 784-256-256-10, 269k params, 3k steps"),
    HeldoutTask("mlp_fashion28_512x3", _fashion("mlp", hidden_sizes=[512, 512, 512]),
                2000, "wider and deeper than the training budget: 930k params"),
    HeldoutTask("conv_pooling_fashion28", _fashion("conv_pooling", channels=[32, 64, 96], strides=[2, 2, 1]),
                1000, "28x28 convnet with a 96-channel layer (training samples at most 64)"),
    HeldoutTask("regression_diabetes_linear", {"family": "regression", "hidden_sizes": [], "batch_size": 32},
                5000, "raw unscaled features (regression is not in taskset)"),
    HeldoutTask("regression_diabetes_mlp64", {"family": "regression", "hidden_sizes": [64, 64], "batch_size": 32},
                3000, "raw unscaled features through a ReLU MLP"),
    HeldoutTask("quadratic_cond1e6_dim100",
                {"family": "quadratic", "dim": 100, "condition_number": 1e6, "rotate": True, "seed": 7},
                10000, "condition number 1e6 (training reaches 1e4), 10k steps"),
    HeldoutTask("quadratic_cond1e5_dim1000_noisy",
                {"family": "quadratic", "dim": 1000, "condition_number": 1e5, "rotate": False, "noise": 0.1,
                 "seed": 3},
                5000, "condition number 1e5, noisy gradients, dim 1000"),
    HeldoutTask("losg_rosenbrock", {"family": "losg", "problem": "rosenbrock", "seed": 11},
                10000, "ill-conditioned valley, 10k steps (5x the training horizons)"),
)

_BY_NAME = {t.name: t for t in HELDOUT_TASKS}


def names() -> tuple[str, ...]:
    """Names of the suite's tasks, in suite order."""
    return tuple(_BY_NAME)


def get(name: str) -> HeldoutTask:
    """The suite task ``name``.

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown held-out task {name!r}; choose from {', '.join(_BY_NAME)}.")
    return _BY_NAME[name]


def suite(tasks: Sequence[str] | None = None, *, steps_scale: float = 1.0) -> list[HeldoutTask]:
    """The suite (or the named subset), horizons multiplied by ``steps_scale``.

    Args:
        tasks: names (see :func:`names`); ``None`` for every task.
        steps_scale: multiplies each horizon (rounded, at least :data:`MIN_STEPS`), e.g. 0.05
            for a quick check on a CPU.

    Raises:
        ValueError: an unknown name, or ``steps_scale`` not a positive number.
    """
    if isinstance(steps_scale, bool) or not isinstance(steps_scale, (int, float)) or not steps_scale > 0:
        raise ValueError(f"steps_scale={steps_scale!r} must be a number > 0, e.g. 0.05 for a quick CPU check.")
    chosen = [get(n) for n in (tasks if tasks is not None else names())]
    return [dataclasses.replace(t, num_steps=max(MIN_STEPS, round(t.num_steps * steps_scale))) for t in chosen]


def check_unseen(training_families: Iterable[str]) -> None:
    """Raises ValueError if a family of the campaign's held-out set or outside taskset is trained on.

    Args:
        training_families: the families of a meta-training mixture.
    """
    seen = set(training_families) & (set(CAMPAIGN_HELD_OUT_FAMILIES) | set(NOT_IN_TASKSET))
    if seen:
        raise ValueError(f"the training mixture contains the held-out families {sorted(seen)}; remove them, "
                         "or the held-out suite no longer measures generalisation.")
