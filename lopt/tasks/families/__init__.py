"""The built-in task families (registered on import)."""

from lopt.tasks.families.conv import ConvFCFamily, ConvFCTask, ConvPoolingFamily, ConvPoolingTask
from lopt.tasks.families.language import (
    CharRNNLMFamily,
    RNNLanguageModelTask,
    RNNTextClassificationFamily,
    RNNTextClassificationTask,
    WordRNNLMFamily,
)
from lopt.tasks.families.mlp import MLPFamily, MLPTask
from lopt.tasks.families.quadratic import QuadraticFamily, QuadraticTask

__all__ = [
    "CharRNNLMFamily",
    "ConvFCFamily",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingTask",
    "MLPFamily",
    "MLPTask",
    "QuadraticFamily",
    "QuadraticTask",
    "RNNLanguageModelTask",
    "RNNTextClassificationFamily",
    "RNNTextClassificationTask",
    "WordRNNLMFamily",
]
