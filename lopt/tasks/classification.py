"""Image classification tasks: the shared loss, accuracy and batch handling."""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
import optax

from lopt.tasks.base import Task, TaskSpec

__all__ = ["ClassificationSpec", "ClassificationTask"]


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
