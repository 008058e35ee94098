"""lopt.optimizers: hand-designed baseline optimizers (optax) and their hyperparameter search.

Factories return ``optax.GradientTransformation``; every numeric hyperparameter may be a
(traced) jax array, so many settings train as one ``jax.vmap``-ed program::

    lrs = learning_rate_grid()                      # 15 log-spaced learning rates
    losses = jax.vmap(lambda lr: train(adam(learning_rate=lr)))(lrs)

Baselines by name: ``names()``, ``defaults(name)``, ``get(name, **hparams)``; random search:
``search_space(name)``, ``sample_hparams(name, key, num)``; TaskSet's learned list of NAdamW
settings: ``opt_list(k)`` (learn your own with ``learn_opt_list``, see docs/opt_list.md).
"""

from lopt.optimizers.adam8p import adam8p
from lopt.optimizers.classic import adam, momentum, rmsprop, sgd
from lopt.optimizers.nadamw import nadamw
from lopt.optimizers.opt_list import load_opt_list, opt_list, opt_list_info, save_opt_list
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
    "learn_opt_list",
    "learning_rate_grid",
    "linear_exponential_schedule",
    "load_opt_list",
    "momentum",
    "nadamw",
    "names",
    "opt_list",
    "opt_list_info",
    "rmsprop",
    "sample_hparams",
    "save_opt_list",
    "search_space",
    "sgd",
    "warmup_cosine_schedule",
]


def __getattr__(name: str):
    # learn_opt_list trains tasks (lopt.evaluate imports this package), so it is imported on use.
    if name == "learn_opt_list":
        from lopt.evaluate.opt_list_search import learn_opt_list

        return learn_opt_list
    raise AttributeError(f"module 'lopt.optimizers' has no attribute {name!r}")
