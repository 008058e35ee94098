"""Baseline optimizers by name: ``names()``, ``defaults(name)``, ``get(name, **hparams)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import optax

from lopt.optimizers.adam8p import adam8p
from lopt.optimizers.classic import adam, momentum, rmsprop, sgd
from lopt.optimizers.nadamw import nadamw
from lopt.optimizers.validation import check_choice, check_known

__all__ = ["defaults", "get", "names"]

_FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "momentum": momentum,
    "rmsprop": rmsprop,
    "adam": adam,
    "nadamw": nadamw,
    "adam8p": adam8p,
}

# The factories take ``learning_rate`` without a default (as optax does); these are the
# conventional starting points used when ``get`` is called without one.
_DEFAULT_LEARNING_RATES = {
    "sgd": 0.01,
    "momentum": 0.01,
    "rmsprop": 0.001,
    "adam": 0.001,
    "nadamw": 0.001,
    "adam8p": 0.001,
}


def names() -> tuple[str, ...]:
    """The names of the baseline optimizers, e.g. ``("sgd", ..., "adam8p")``."""
    return tuple(_FACTORIES)


def defaults(name: str) -> dict[str, Any]:
    """The default value of every hyperparameter of the optimizer ``name``.

    Args:
        name: one of :func:`names`.

    Returns:
        A new dict from hyperparameter name to default (the factory's defaults, plus a
        conventional ``learning_rate``).

    Raises:
        ValueError: if ``name`` is unknown; the message lists the valid names.

    Example:
        >>> defaults("adam")
        {'learning_rate': 0.001, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-08}
    """
    factory = _FACTORIES[check_choice("optimizer", name, _FACTORIES)]
    values = {"learning_rate": _DEFAULT_LEARNING_RATES[name]}
    for param in inspect.signature(factory).parameters.values():
        if param.default is not inspect.Parameter.empty:
            values[param.name] = param.default
    return values


def get(name: str, **hparams: Any) -> optax.GradientTransformation:
    """Builds the optimizer ``name`` with ``hparams`` over its :func:`defaults`.

    Args:
        name: one of :func:`names`.
        **hparams: hyperparameters to override; values may be numbers or (traced) scalar
            arrays, e.g. a dict drawn by :func:`~lopt.optimizers.sample_hparams`.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: for an unknown optimizer or hyperparameter name (the message lists the
            valid ones), or a hyperparameter out of range.
        TypeError: for a hyperparameter of the wrong type.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = get("momentum", learning_rate=0.1, nesterov=True)
        >>> updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
        >>> updates
        Array([-0.19, -0.19], dtype=float32)
    """
    values = defaults(name)
    check_known(name, hparams, values)
    values.update(hparams)
    return _FACTORIES[name](**values)
