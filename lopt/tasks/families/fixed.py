"""``fixed``: a short list of named task configs over all families, a standard set to cite.

Each entry is an ordinary config of another family, frozen under a name (``fixed/<name>`` in
text), so results on it are comparable across papers and versions. Build one with
``lopt.tasks.build({"family": "fixed", "name": "mlp_fashion8_32"})``; the built task is that
family's own task class, with ``spec.family == "fixed"``. ``get("fixed").sample(i)``
with an int ``i`` cycles through the entries in order; with a JAX key it draws one uniformly.

Entries whose family is not registered (the language families live in another module) are left
out of :func:`fixed_names`, so the list only names tasks this installation can build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from lopt.tasks.config import TaskConfig
from lopt.tasks.family import TaskFamily, get, names
from lopt.tasks.sampling import choice, numpy_rng

__all__ = ["FIXED_TASKS", "FixedFamily", "fixed_names"]

#: The named configs, in the order ``sample(i)`` cycles through them.
FIXED_TASKS: dict[str, dict[str, Any]] = {
    "quadratic_10": {"family": "quadratic", "dim": 10, "condition_number": 10.0, "seed": 0},
    "quadratic_100_noisy": {"family": "quadratic", "dim": 100, "condition_number": 100.0, "noise": 0.1, "seed": 1},
    "losg_rosenbrock": {"family": "losg", "problem": "rosenbrock"},
    "losg_logistic_100": {"family": "losg", "problem": "logistic_regression", "dim": 100, "batch_size": 50},
    "losg_mlp_2class": {"family": "losg", "problem": "mlp_2class", "dim": 8, "hidden_sizes": [8, 5],
                        "batch_size": 10},
    "mlp_digits8_32": {"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [32],
                       "batch_size": 128},
    "mlp_fashion8_32": {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
                        "batch_size": 128},
    "mlp_fashion16_128x128": {"family": "mlp", "dataset": "fashion_mnist", "image_size": 16,
                              "hidden_sizes": [128, 128], "batch_size": 128},
    "mlp_fashion28_logreg": {"family": "mlp", "dataset": "fashion_mnist", "image_size": 28, "hidden_sizes": [],
                             "batch_size": 128},
    "conv_pooling_digits8": {"family": "conv_pooling", "dataset": "digits", "image_size": 8,
                             "channels": [16, 32], "batch_size": 128},
    "conv_pooling_fashion16": {"family": "conv_pooling", "dataset": "fashion_mnist", "image_size": 16,
                               "channels": [16, 32, 32], "strides": [2, 2, 1], "batch_size": 128},
    "conv_fc_fashion16": {"family": "conv_fc", "dataset": "fashion_mnist", "image_size": 16, "channels": [16, 32],
                          "hidden_sizes": [64], "batch_size": 128},
    "mlp_ae_fashion8": {"family": "mlp_ae", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [64],
                        "latent_size": 16, "loss": "mse", "batch_size": 128},
    "mlp_vae_fashion8": {"family": "mlp_vae", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [64],
                         "latent_size": 16, "batch_size": 128},
    "nvp_digits8": {"family": "nvp", "dataset": "digits", "image_size": 8, "num_layers": 4, "hidden_sizes": [64],
                    "batch_size": 128},
    "maf_digits8": {"family": "maf", "dataset": "digits", "image_size": 8, "num_layers": 4, "hidden_sizes": [128],
                    "batch_size": 128},
    "char_rnn_lm_fortunes_lstm64": {"family": "char_rnn_lm", "corpus": "fortunes", "cell": "lstm",
                                    "embed_size": 32, "hidden_size": 64, "seq_len": 32, "batch_size": 32},
    "word_rnn_lm_wordnet_lstm64": {"family": "word_rnn_lm", "corpus": "wordnet", "cell": "lstm", "embed_size": 32,
                                   "hidden_size": 64, "seq_len": 16, "batch_size": 32, "vocab_size": 1000},
    "rnn_text_classification_wordnet_gru64": {"family": "rnn_text_classification", "corpus": "wordnet",
                                              "level": "word", "cell": "gru", "embed_size": 32, "hidden_size": 64,
                                              "seq_len": 16, "batch_size": 64, "vocab_size": 1000},
}
PREFIX = "fixed/"


def fixed_names() -> tuple[str, ...]:
    """Names of the entries whose family is registered, in :data:`FIXED_TASKS` order.

    Example:
        >>> fixed_names()[:3]
        ('quadratic_10', 'quadratic_100_noisy', 'losg_rosenbrock')
    """
    registered = set(names())
    return tuple(name for name, cfg in FIXED_TASKS.items() if cfg["family"] in registered)


class FixedFamily(TaskFamily):
    """The named configs of :data:`FIXED_TASKS` as one family with a single key, ``name``.

    ``name`` may be given with or without the ``fixed/`` prefix; configs store it without.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("fixed")
        >>> family.sample(0)["name"], family.sample(1)["name"]
        ('quadratic_10', 'quadratic_100_noisy')
        >>> family.resolve({"name": "fixed/quadratic_10"})["dim"]
        10
        >>> lopt.tasks.build({"family": "fixed", "name": "losg_rosenbrock"}).spec.kind
        'function_2d'
    """

    name = "fixed"
    description = "A fixed, citable list of named task configs over all families (fixed/<name>)."

    def defaults(self):
        return {"name": "quadratic_10"}

    def sampling_ranges(self):
        return {"name": f"sample(i) with an int cycles through {len(fixed_names())} names in order; "
                        "a JAX key draws one uniformly"}

    def sample_config(self, rng):
        return {"name": choice(rng, fixed_names())}

    def sample(self, key: Any) -> TaskConfig:
        """The ``key % n``-th entry for an int ``key``; a uniformly drawn entry for a JAX key."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            available = fixed_names()
            return self.complete({"name": available[key % len(available)]})
        return self.complete(self.sample_config(numpy_rng(key)))

    def complete(self, cfg: Mapping[str, Any]) -> TaskConfig:
        cfg = dict(cfg)
        if isinstance(cfg.get("name"), str) and cfg["name"].startswith(PREFIX):
            cfg["name"] = cfg["name"][len(PREFIX):]
        return super().complete(cfg)

    def validate(self, cfg):
        if cfg["name"] not in fixed_names():
            raise ValueError(f"fixed: name={cfg['name']!r} is not a fixed task; use one of {fixed_names()}.")

    def resolve(self, cfg: Mapping[str, Any]) -> TaskConfig:
        """The complete config of the named entry (a config of its own family)."""
        entry = dict(FIXED_TASKS[self.complete(cfg)["name"]])
        return get(entry["family"]).complete(entry)

    def make_task(self, cfg):
        resolved = self.resolve(cfg)
        task = get(resolved["family"]).make_task(resolved)
        # The task is the entry family's own, named "fixed" (so ``task.name == cfg["family"]``).
        return type(task)(dataclasses.replace(task.spec, family=self.name), task.data, task.settings)
