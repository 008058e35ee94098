"""Meta-training: truncated unrolls, estimators, task normalisation, the trainer.

Example:
    >>> import jax, lopt
    >>> lopt_ = lopt.learned.get("learnable_sgdm")
    >>> problem = lopt.meta.make_problem(lopt_, [{"family": "quadratic", "dim": 8}], horizon=100,
    ...                                  unroll_length=10, normalizers=[(10.0, 0.0)])
    >>> pes = lopt.meta.PES(problem, num_tasks=4, std=0.01)
    >>> theta = lopt_.init(jax.random.key(0))
    >>> state = pes.init(theta, key=jax.random.key(1))
    >>> grad, state, metrics = jax.jit(lambda e, t, s, k: e.estimate(t, s, key=k))(pes, theta, state, jax.random.key(2))
"""

from lopt.meta.checkpoints import CheckpointManager
from lopt.meta.config import MetaTrainConfig, load_config
from lopt.meta.estimators import (
    ESTIMATORS,
    PES,
    Averaged,
    Estimator,
    FullHorizonES,
    PESState,
    TruncatedBackprop,
    TruncatedES,
)
from lopt.meta.metrics_log import MetricsLog, read_metrics
from lopt.meta.normalizer import (
    DEFAULT_LEARNING_RATES,
    LossNormalizer,
    NormalizerCache,
    default_cache_dir,
    fit_normalizer,
    normalize_loss,
    normalizer_arrays,
)
from lopt.meta.problem import make_problem
from lopt.meta.trainer import MetaTrainer, build_setup
from lopt.meta.truncation import (
    ConstantHorizon,
    LogUniformHorizon,
    NeverEnding,
    TruncationSchedule,
    make_schedule,
)
from lopt.meta.unroll import (
    MetaProblem,
    SlotState,
    UnrollOutput,
    init_slots,
    reset_finished,
    unroll,
)

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "ESTIMATORS",
    "PES",
    "Averaged",
    "CheckpointManager",
    "ConstantHorizon",
    "Estimator",
    "FullHorizonES",
    "LogUniformHorizon",
    "LossNormalizer",
    "MetaProblem",
    "MetaTrainConfig",
    "MetaTrainer",
    "MetricsLog",
    "NeverEnding",
    "NormalizerCache",
    "PESState",
    "SlotState",
    "TruncatedBackprop",
    "TruncatedES",
    "TruncationSchedule",
    "UnrollOutput",
    "build_setup",
    "default_cache_dir",
    "fit_normalizer",
    "init_slots",
    "load_config",
    "make_problem",
    "make_schedule",
    "normalize_loss",
    "normalizer_arrays",
    "read_metrics",
    "reset_finished",
    "unroll",
]
