"""Tasks (training problems), task families (distributions over them) and their datasets.

Example:
    >>> import jax, lopt
    >>> {"quadratic", "mlp", "conv_pooling", "conv_fc"} <= set(lopt.tasks.names())
    True
    >>> cfg = lopt.tasks.sample("mlp", jax.random.key(0))
    >>> task = lopt.tasks.build(cfg)
"""

from lopt.tasks import datasets, layers
from lopt.tasks.base import SPLITS, Task, TaskSpec
from lopt.tasks.classification import ClassificationSpec, ClassificationTask
from lopt.tasks.config import TaskConfig
from lopt.tasks.families import (
    CharRNNLMFamily,
    ConvFCFamily,
    ConvFCTask,
    ConvPoolingFamily,
    ConvPoolingTask,
    FixedFamily,
    LosgFamily,
    MAFFamily,
    MLPAutoencoderFamily,
    MLPFamily,
    MLPTask,
    MLPVAEFamily,
    NVPFamily,
    QuadraticFamily,
    QuadraticTask,
    RNNTextClassificationFamily,
    WordRNNLMFamily,
)
from lopt.tasks.family import TaskFamily, build, get, names, register, sample
from lopt.tasks.stacking import stack, vmap_axes

register(QuadraticFamily())
register(MLPFamily())
register(ConvPoolingFamily())
register(ConvFCFamily())
register(CharRNNLMFamily())
register(WordRNNLMFamily())
register(RNNTextClassificationFamily())
register(LosgFamily())
register(MLPAutoencoderFamily())
register(MLPVAEFamily())
register(NVPFamily())
register(MAFFamily())
register(FixedFamily())

__all__ = [
    "SPLITS",
    "ClassificationSpec",
    "ClassificationTask",
    "ConvFCFamily",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingTask",
    "FixedFamily",
    "LosgFamily",
    "MAFFamily",
    "MLPAutoencoderFamily",
    "MLPFamily",
    "MLPTask",
    "MLPVAEFamily",
    "NVPFamily",
    "QuadraticFamily",
    "QuadraticTask",
    "Task",
    "TaskConfig",
    "TaskFamily",
    "TaskSpec",
    "build",
    "datasets",
    "get",
    "layers",
    "names",
    "register",
    "sample",
    "stack",
    "vmap_axes",
]
