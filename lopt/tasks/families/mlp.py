"""Image classification MLPs (TaskSet's ``mlp_family``, on offline datasets)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lopt.tasks import datasets
from lopt.tasks.classification import (
    BATCH_SIZES,
    ClassificationSpec,
    ClassificationTask,
    check_image_config,
    check_int_list,
)
from lopt.tasks.classification import IMAGE_DATASETS as DATASETS
from lopt.tasks.family import TaskFamily
from lopt.tasks.layers import ACTIVATIONS, INITIALIZERS, activate, init_weight
from lopt.tasks.sampling import choice, log_uniform_int

__all__ = ["MLPFamily", "MLPSpec", "MLPTask", "check_image_config"]


@dataclasses.dataclass(frozen=True)
class MLPSpec(ClassificationSpec):
    """Static structure: hidden layer widths (empty for logistic regression)."""

    hidden_sizes: tuple[int, ...] = ()


class MLPTask(ClassificationTask):
    """A fully connected classifier on flattened images.

    Settings (dynamic): ``activation`` (int index into ``spec.activations``), ``init_scale``.
    """

    def init(self, key):
        spec = self.spec
        sizes = [math.prod(spec.input_shape), *spec.hidden_sizes, spec.num_classes]
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {"w": init_weight(k, (n_in, n_out), n_in, n_out, spec.initializer, self.settings["init_scale"]),
             "b": jnp.zeros((n_out,))}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
        ]

    def logits(self, params, x):
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = activate(h, self.settings["activation"], self.spec.activations)
        return h


class MLPFamily(TaskFamily):
    """MLP classifiers of sampled depth, widths, activation, initializer, data and batch size."""

    name = "mlp"
    description = "Image classification MLP (depth 0-4) on Fashion-MNIST or digits."

    def defaults(self):
        return {"dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
                "activation": "relu", "initializer": "he_normal", "batch_size": 128, "init_scale": 1.0}

    def sampling_ranges(self):
        return {"hidden_sizes": "depth uniform in {0,...,4}; each width log-uniform integer in [16, 256]",
                "activation": f"uniform over {tuple(ACTIVATIONS)}",
                "initializer": f"uniform over {INITIALIZERS}",
                "dataset": f"uniform over {DATASETS}",
                "image_size": "uniform over (8, 16, 28) (digits: 8 or 16)",
                "batch_size": f"uniform over {BATCH_SIZES}", "init_scale": "1"}

    def sample_config(self, rng):
        depth = int(rng.integers(0, 5))
        dataset = choice(rng, DATASETS)
        return {"hidden_sizes": [log_uniform_int(rng, 16, 256) for _ in range(depth)],
                "activation": choice(rng, tuple(ACTIVATIONS)),
                "initializer": choice(rng, INITIALIZERS),
                "dataset": dataset,
                "image_size": choice(rng, (8, 16) if dataset == "digits" else (8, 16, 28)),
                "batch_size": choice(rng, BATCH_SIZES)}

    def validate(self, cfg):
        check_image_config(self.name, cfg)
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], max_len=8)

    def make_task(self, cfg):
        data = datasets.load(cfg["dataset"], cfg["image_size"])
        spec = MLPSpec(family=self.name, batch_size=cfg["batch_size"], input_shape=data.info.input_shape,
                       num_classes=data.info.num_classes, activations=(cfg["activation"],),
                       initializer=cfg["initializer"], hidden_sizes=tuple(cfg["hidden_sizes"]))
        settings = {"activation": jnp.int32(0), "init_scale": jnp.float32(cfg["init_scale"])}
        return MLPTask(spec, data, settings)
