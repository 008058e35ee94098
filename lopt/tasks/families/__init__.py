"""The built-in task families (registered on import)."""

from lopt.tasks.families.conv import ConvFCFamily, ConvFCTask, ConvPoolingFamily, ConvPoolingTask
from lopt.tasks.families.fixed import FixedFamily
from lopt.tasks.families.flows import MAFFamily, MAFTask, NVPFamily, NVPTask
from lopt.tasks.families.generative import (
    MLPAutoencoderFamily,
    MLPAutoencoderTask,
    MLPVAEFamily,
    MLPVAETask,
)
from lopt.tasks.families.language import (
    CharRNNLMFamily,
    RNNLanguageModelTask,
    RNNTextClassificationFamily,
    RNNTextClassificationTask,
    WordRNNLMFamily,
)
from lopt.tasks.families.losg import LosgFamily, LosgTask
from lopt.tasks.families.mlp import MLPFamily, MLPTask
from lopt.tasks.families.quadratic import QuadraticFamily, QuadraticTask
from lopt.tasks.families.regression import RegressionFamily, RegressionTask
from lopt.tasks.families.transformer import TransformerLMFamily, TransformerLMTask

__all__ = [
    "CharRNNLMFamily",
    "ConvFCFamily",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingTask",
    "FixedFamily",
    "LosgFamily",
    "LosgTask",
    "MAFFamily",
    "MAFTask",
    "MLPAutoencoderFamily",
    "MLPAutoencoderTask",
    "MLPFamily",
    "MLPTask",
    "MLPVAEFamily",
    "MLPVAETask",
    "NVPFamily",
    "NVPTask",
    "QuadraticFamily",
    "QuadraticTask",
    "RNNLanguageModelTask",
    "RNNTextClassificationFamily",
    "RNNTextClassificationTask",
    "RegressionFamily",
    "RegressionTask",
    "TransformerLMFamily",
    "TransformerLMTask",
    "WordRNNLMFamily",
]
