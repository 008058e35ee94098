"""Small, seeded samplers used by task families to draw configs (host-side numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["choice", "log_uniform", "log_uniform_int", "numpy_rng"]


def numpy_rng(key: Any) -> np.random.Generator:
    """Returns a numpy Generator seeded deterministically from an int seed or a JAX key.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return np.random.default_rng(int(key))
    if isinstance(key, jax.Array):
        data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        return np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel().tolist())
    raise TypeError(f"key={key!r} must be an int seed or a jax.random key, e.g. jax.random.key(0).")


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float whose logarithm is uniform on ``[log low, log high]``."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in ``[low, high]`` whose logarithm is (roughly) uniform."""
    return int(min(high, max(low, round(log_uniform(rng, low, high + 0.4999)))))


def choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One element of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]
