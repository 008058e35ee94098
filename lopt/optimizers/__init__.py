"""lopt.optimizers: hand-designed baseline optimizers (optax) and their hyperparameter search.

Factories return ``optax.GradientTransformation``; every numeric hyperparameter may be a
(traced) jax array, so many settings train as one ``jax.vmap``-ed program::

    lrs = learning_rate_grid()                      # 15 log-spaced learning rates
    losses = jax.vmap(lambda lr: train(adam(learning_rate=lr)))(lrs)

Baselines by name: ``names()``, ``defaults(name)``, ``get(name, **hparams)``; random search:
``search_space(name)``, ``sample_hparams(name, key, num)``.
"""

from lopt.optimizers.adam8p import adam8p
from lopt.optimizers.classic import adam, momentum, rmsprop, sgd
from lopt.optimizers.nadamw import nadamw
from lopt.optimizers.registry import defaults, get, names
from lopt.optimizers.schedules import linear_exponential_schedule, warmup_cosine_schedule
from lopt.optimizers.search_spaces import (
    Bernoulli,
    Dimension,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
    ZeroOr,
    learning_rate_grid,
    sample_hparams,
    search_space,
)

__all__ = [
    "Bernoulli",
    "Dimension",
    "LogUniform",
    "OneMinusLogUniform",
    "Uniform",
    "ZeroOr",
    "adam",
    "adam8p",
    "defaults",
    "get",
    "learning_rate_grid",
    "linear_exponential_schedule",
    "momentum",
    "nadamw",
    "names",
    "rmsprop",
    "sample_hparams",
    "search_space",
    "sgd",
    "warmup_cosine_schedule",
]
