"""The built-in task families (registered on import)."""

from lopt.tasks.families.mlp import MLPFamily, MLPTask
from lopt.tasks.families.quadratic import QuadraticFamily, QuadraticTask

__all__ = ["MLPFamily", "MLPTask", "QuadraticFamily", "QuadraticTask"]
