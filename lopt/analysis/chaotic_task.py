"""A tiny task whose training is chaotic: gradient descent on a double well with large steps.

With ``f(x) = sum(x^4 / 4 - x^2 / 2)`` the SGD step is ``x <- (1 + lr) x - lr x^3``, the cubic map,
which is bounded and chaotic for ``lr`` near 1.45 (it stays in ``|x| < 1.3`` from starts in
``[-1, 1]``). Meta-gradients through its unrolls explode while its loss stays bounded: the
setting of "Gradients are not all you need" (arXiv 2111.05803) in four parameters, cheap enough
for tests. Batches are small input jitter (``x + 0.001 * noise``), so seeds differ.

Example:
    >>> import jax
    >>> task = DoubleWellTask.make(dim=4)
    >>> float(task.loss({"x": jax.numpy.ones(4)}, jax.numpy.zeros(4)))
    -1.0
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.tasks.base import Task, TaskSpec

__all__ = ["DoubleWellSpec", "DoubleWellTask"]


@dataclasses.dataclass(frozen=True)
class DoubleWellSpec(TaskSpec):
    """Static structure: the dimension."""

    dim: int = 4


class DoubleWellTask(Task):
    """``f(x) = sum((x + 0.001 eps)^4 / 4 - (x + 0.001 eps)^2 / 2)``, ``x0 ~ U[-1, 1]^dim``."""

    @classmethod
    def make(cls, dim: int = 4) -> DoubleWellTask:
        """Builds the task (``dim`` independent wells)."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"DoubleWellTask: dim={dim!r} must be a positive int.")
        return cls(DoubleWellSpec("double_well", 1, dim))

    def init(self, key: jax.Array) -> dict[str, jax.Array]:
        return {"x": jax.random.uniform(key, (self.spec.dim,), minval=-1.0, maxval=1.0)}

    def sample_batch(self, key: jax.Array, split: str = "train") -> jax.Array:
        return 0.001 * jax.random.normal(key, (self.spec.dim,))

    def loss(self, params: dict[str, jax.Array], batch: jax.Array) -> jax.Array:
        x = params["x"] + batch
        return jnp.sum(x**4 / 4 - x**2 / 2)
