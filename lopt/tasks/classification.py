"""Image classification tasks: the shared loss, accuracy, and config checks of image families."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.tasks import datasets
from lopt.tasks.base import Task, TaskSpec
from lopt.tasks.layers import ACTIVATIONS, INITIALIZERS

__all__ = [
    "BATCH_SIZES",
    "IMAGE_DATASETS",
    "ClassificationSpec",
    "ClassificationTask",
    "check_image_config",
    "check_int",
    "check_int_list",
]

#: Batch sizes the image families sample from.
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
#: Datasets the image families sample from (any registered dataset or ``"idx:<dir>"`` builds).
IMAGE_DATASETS = ("fashion_mnist", "digits")


@dataclasses.dataclass(frozen=True)
class ClassificationSpec(TaskSpec):
    """Static structure shared by classifiers.

    Attributes:
        input_shape: shape of one image, ``(H, W, C)``.
        num_classes: number of labels.
        activations: activation functions the task may use; ``settings["activation"]`` indexes it.
        initializer: weight initializer name (see :data:`lopt.tasks.layers.INITIALIZERS`).
    """

    input_shape: tuple[int, ...] = ()
    num_classes: int = 10
    activations: tuple[str, ...] = ("relu",)
    initializer: str = "he_normal"


class ClassificationTask(Task):
    """A classifier trained with mean softmax cross-entropy; reports accuracy too.

    Subclasses implement :meth:`init` and :meth:`logits`.
    """

    has_accuracy = True

    @abc.abstractmethod
    def logits(self, params, x: jax.Array) -> jax.Array:
        """Returns ``[batch, num_classes]`` logits for images ``x`` of shape ``[batch, H, W, C]``."""

    def loss(self, params, batch) -> jax.Array:
        logits = self.logits(params, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def metrics(self, params, batch) -> dict[str, jax.Array]:
        logits = self.logits(params, batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        accuracy = (jnp.argmax(logits, axis=-1) == batch["y"]).mean()
        return {"loss": loss, "accuracy": accuracy}


def check_int(family: str, key: str, value: Any, *, minimum: int = 1) -> int:
    """Returns ``value`` if it is an int (not a bool) ``>= minimum``, else raises a ValueError.

    Example:
        >>> check_int("mlp", "batch_size", 32)
        32
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{family}: {key}={value!r} must be an integer >= {minimum}.")
    return value


def check_int_list(family: str, key: str, value: Any, *, min_len: int = 0, max_len: int = 8) -> tuple[int, ...]:
    """Returns ``value`` as a tuple if it holds ``min_len..max_len`` positive ints, else ValueError.

    Example:
        >>> check_int_list("mlp", "hidden_sizes", [32, 16])
        (32, 16)
    """
    ok = isinstance(value, (list, tuple)) and min_len <= len(value) <= max_len and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        shown = list(value) if isinstance(value, (list, tuple)) else value
        raise ValueError(f"{family}: {key}={shown!r} must be a list of {min_len} to {max_len} positive integers.")
    return tuple(value)


def check_image_config(family: str, cfg: Mapping[str, Any]) -> None:
    """Validation shared by the image families: dataset, size, batch, activation, initializer.

    Args:
        family: the family name, used in error messages.
        cfg: a complete config holding ``dataset``, ``image_size``, ``batch_size``,
            ``activation``, ``initializer`` and ``init_scale``.

    Raises:
        ValueError: naming the bad key and value and what would be accepted.

    Example:
        >>> cfg = {"dataset": "digits", "image_size": 8, "batch_size": 32, "activation": "relu",
        ...        "initializer": "he_normal", "init_scale": 1.0}
        >>> check_image_config("mlp", cfg)  # passes silently
        >>> check_image_config("mlp", {**cfg, "image_size": 12})
        Traceback (most recent call last):
        ...
        ValueError: mlp: image_size=12; use one of (8, 16, 28).
    """
    dataset = cfg["dataset"]
    if not isinstance(dataset, str) or (dataset not in datasets.names() and not dataset.startswith("idx:")):
        raise ValueError(f"{family}: dataset={dataset!r} is unknown; use one of {datasets.names()} "
                         "or 'idx:<directory>'.")
    if isinstance(cfg["image_size"], bool) or cfg["image_size"] not in datasets.IMAGE_SIZES:
        raise ValueError(f"{family}: image_size={cfg['image_size']!r}; use one of {datasets.IMAGE_SIZES}.")
    check_int(family, "batch_size", cfg["batch_size"])
    if cfg["activation"] not in ACTIVATIONS:
        raise ValueError(f"{family}: activation={cfg['activation']!r} is not supported; "
                         f"use one of {tuple(ACTIVATIONS)}.")
    if cfg["initializer"] not in INITIALIZERS:
        raise ValueError(f"{family}: initializer={cfg['initializer']!r}; use one of {INITIALIZERS}.")
    scale = cfg["init_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{family}: init_scale={scale!r} must be a number > 0.")
