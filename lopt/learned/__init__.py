"""Learned optimizer architectures, as optax transformations.

A learned optimizer maps meta-parameters ``theta`` to an optax
``GradientTransformationExtraArgs``; ``loss=`` (and ``valid_loss=`` where read) are extra
args of its update. See :class:`LearnedOptimizer` for the protocol and
``docs/learned_optimizers.md`` for the architectures.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lopt.learned
    >>> lopt.learned.names()
    ('hierarchical', 'hyper', 'learnable_adam', 'learnable_sgdm', 'lstm', 'mlp', 'nominal')
    >>> lopt_ = lopt.learned.get("mlp")
    >>> opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=100)
    >>> params = {"w": jnp.ones((3, 2))}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params, loss=jnp.asarray(1.0))
    >>> params = optax.apply_updates(params, updates)
"""

from lopt.learned import features, nn
from lopt.learned.base import LearnedOptimizer, Transform, mask_non_finite, reads_valid_loss
from lopt.learned.hierarchical import HierarchicalLOpt, HierarchicalState
from lopt.learned.hyper import HyperLOpt, HyperState
from lopt.learned.learnable import (
    LearnableAdam,
    LearnableAdamState,
    LearnableSGDM,
    LearnableSGDMState,
)
from lopt.learned.lstm import LSTMLOpt, LSTMLOptState
from lopt.learned.mlp import MLPLOpt, MLPLOptState
from lopt.learned.nominal import NominalLOpt, NominalState
from lopt.learned.registry import get, names, register
from lopt.learned.serialization import THETA_FORMAT_VERSION, load_theta, save_theta, stored_config

for _cls in (MLPLOpt, LSTMLOpt, HierarchicalLOpt, HyperLOpt, LearnableAdam, LearnableSGDM, NominalLOpt):
    register(_cls)
del _cls

__all__ = [
    "THETA_FORMAT_VERSION",
    "HierarchicalLOpt",
    "HierarchicalState",
    "HyperLOpt",
    "HyperState",
    "LSTMLOpt",
    "LSTMLOptState",
    "LearnableAdam",
    "LearnableAdamState",
    "LearnableSGDM",
    "LearnableSGDMState",
    "LearnedOptimizer",
    "MLPLOpt",
    "MLPLOptState",
    "NominalLOpt",
    "NominalState",
    "Transform",
    "features",
    "get",
    "load_theta",
    "mask_non_finite",
    "names",
    "nn",
    "reads_valid_loss",
    "register",
    "save_theta",
    "stored_config",
]
