"""The built-in task families (registered on import)."""

from lopt.tasks.families.conv import ConvFCFamily, ConvFCTask, ConvPoolingFamily, ConvPoolingTask
from lopt.tasks.families.mlp import MLPFamily, MLPTask
from lopt.tasks.families.quadratic import QuadraticFamily, QuadraticTask

__all__ = [
    "ConvFCFamily",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingTask",
    "MLPFamily",
    "MLPTask",
    "QuadraticFamily",
    "QuadraticTask",
]
