"""Tasks (training problems), task families (distributions over them) and their datasets.

Example:
    >>> import jax, lopt
    >>> {"quadratic", "mlp", "conv_pooling", "conv_fc"} <= set(lopt.tasks.names())
    True
    >>> cfg = lopt.tasks.sample("mlp", jax.random.key(0))
    >>> task = lopt.tasks.build(cfg)
"""

from lopt.tasks import datasets, layers
from lopt.tasks.augment import (
    AugmentedFamily,
    LossScaleTask,
    LowPrecisionTask,
    ReparamTask,
    SubsampleTask,
    TaskWrapper,
    augment,
    low_precision,
    reparameterize,
    scale_loss,
    subsample,
)
from lopt.tasks.base import SPLITS, Task, TaskSpec
from lopt.tasks.budget import (
    Budget,
    BudgetError,
    TaskCost,
    estimate_cost,
    sample_within_budget,
    task_signature,
)
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
    RegressionFamily,
    RNNTextClassificationFamily,
    TransformerLMFamily,
    WordRNNLMFamily,
)
from lopt.tasks.family import TaskFamily, build, get, names, register, sample
from lopt.tasks.mixture import Augmentation, Mixture, base_family, mixture, structure_key, taskset
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
register(TransformerLMFamily())
register(RegressionFamily())
register(FixedFamily())
register(AugmentedFamily())

__all__ = [
    "SPLITS",
    "Augmentation",
    "AugmentedFamily",
    "Budget",
    "BudgetError",
    "ClassificationSpec",
    "ClassificationTask",
    "ConvFCFamily",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingTask",
    "FixedFamily",
    "LosgFamily",
    "LossScaleTask",
    "LowPrecisionTask",
    "MAFFamily",
    "MLPAutoencoderFamily",
    "MLPFamily",
    "MLPTask",
    "MLPVAEFamily",
    "Mixture",
    "NVPFamily",
    "QuadraticFamily",
    "QuadraticTask",
    "ReparamTask",
    "SubsampleTask",
    "Task",
    "TaskConfig",
    "TaskCost",
    "TaskFamily",
    "TaskSpec",
    "TaskWrapper",
    "augment",
    "base_family",
    "build",
    "datasets",
    "estimate_cost",
    "get",
    "layers",
    "low_precision",
    "mixture",
    "names",
    "register",
    "reparameterize",
    "sample",
    "sample_within_budget",
    "scale_loss",
    "stack",
    "structure_key",
    "subsample",
    "task_signature",
    "taskset",
    "vmap_axes",
]
