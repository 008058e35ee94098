"""Building blocks shared by the neural-network task families: activations, initialisers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "INITIALIZERS", "activate", "activation_index", "init_weight"]

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "swish": jax.nn.swish,
    "gelu": jax.nn.gelu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
    "relu6": jax.nn.relu6,
    "cos": jnp.cos,
}

INITIALIZERS = ("he_normal", "glorot_normal", "glorot_uniform", "lecun_normal")


def activation_index(name: str, options: Sequence[str]) -> int:
    """Position of activation ``name`` in ``options`` (ValueError listing them if absent)."""
    if name not in options:
        raise ValueError(f"activation={name!r} is not supported; use one of {tuple(options)}.")
    return list(options).index(name)


def activate(x: jax.Array, index: jax.Array, options: Sequence[str]) -> jax.Array:
    """Applies ``options[index]``; ``index`` may be traced (dynamic activation choice).

    With a single option no branch is compiled; with several, ``lax.switch`` picks one (under
    ``vmap`` every option is computed and the right one selected).
    """
    if len(options) == 1:
        return ACTIVATIONS[options[0]](x)
    return jax.lax.switch(index, [ACTIVATIONS[name] for name in options], x)


def init_weight(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
                initializer: str, scale: jax.Array | float = 1.0) -> jax.Array:
    """Draws a weight tensor with a named variance-scaling initializer times ``scale``."""
    if initializer == "he_normal":
        return jax.random.normal(key, shape) * (scale * math.sqrt(2.0 / fan_in))
    if initializer == "glorot_normal":
        return jax.random.normal(key, shape) * (scale * math.sqrt(2.0 / (fan_in + fan_out)))
    if initializer == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, minval=-limit, maxval=limit) * scale
    if initializer == "lecun_normal":
        return jax.random.normal(key, shape) * (scale * math.sqrt(1.0 / fan_in))
    raise ValueError(f"initializer={initializer!r} is not supported; use one of {INITIALIZERS}.")
