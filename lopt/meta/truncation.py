"""Truncation schedules: how long each inner training episode (its horizon) lasts."""

from __future__ import annotations

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["ConstantHorizon", "LogUniformHorizon", "NeverEnding", "TruncationSchedule", "make_schedule"]

NEVER_ENDING_HORIZON = 2**30


class TruncationSchedule(abc.ABC):
    """Samples episode horizons inside jit: ``sample(key) -> int32`` scalar."""

    @abc.abstractmethod
    def sample(self, key: jax.Array) -> jax.Array:
        """One horizon (an int32 scalar; may be traced)."""

    @property
    @abc.abstractmethod
    def max_horizon(self) -> int:
        """The longest horizon this schedule can produce."""


@dataclasses.dataclass(frozen=True)
class ConstantHorizon(TruncationSchedule):
    """Every episode lasts ``horizon`` inner steps.

    Example:
        >>> import jax
        >>> int(ConstantHorizon(1000).sample(jax.random.key(0)))
        1000
    """

    horizon: int = 1000

    def __post_init__(self):
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"ConstantHorizon: horizon={self.horizon!r} must be a positive integer.")

    def sample(self, key):
        del key
        return jnp.int32(self.horizon)

    @property
    def max_horizon(self):
        return self.horizon


@dataclasses.dataclass(frozen=True)
class LogUniformHorizon(TruncationSchedule):
    """Horizons log-uniform in ``[min_horizon, max_horizon]`` (Metz et al. 2020 use 100..10,000).

    Example:
        >>> import jax
        >>> h = int(LogUniformHorizon(100, 10_000).sample(jax.random.key(0)))
        >>> 100 <= h <= 10_000
        True
    """

    min_horizon: int = 100
    max_horizon_: int = 10_000

    def __post_init__(self):
        if not (isinstance(self.min_horizon, int) and isinstance(self.max_horizon_, int)
                and 1 <= self.min_horizon <= self.max_horizon_):
            raise ValueError(f"LogUniformHorizon: need integers 1 <= min_horizon <= max_horizon, got "
                             f"{self.min_horizon!r}, {self.max_horizon_!r}.")

    def sample(self, key):
        u = jax.random.uniform(key, minval=math.log(self.min_horizon), maxval=math.log(self.max_horizon_))
        return jnp.clip(jnp.round(jnp.exp(u)), self.min_horizon, self.max_horizon_).astype(jnp.int32)

    @property
    def max_horizon(self):
        return self.max_horizon_


@dataclasses.dataclass(frozen=True)
class NeverEnding(TruncationSchedule):
    """Episodes never end (tasks are reset only when they diverge).

    Learned optimizers that read fraction-of-training features see a horizon of ``2**30``.
    """

    def sample(self, key):
        del key
        return jnp.int32(NEVER_ENDING_HORIZON)

    @property
    def max_horizon(self):
        return NEVER_ENDING_HORIZON


def make_schedule(kind: str, *, horizon: int = 1000, min_horizon: int = 100,
                  max_horizon: int = 10_000) -> TruncationSchedule:
    """Builds a schedule by name: ``"constant"``, ``"log_uniform"`` or ``"never_ending"``.

    Example:
        >>> make_schedule("constant", horizon=200)
        ConstantHorizon(horizon=200)
    """
    if kind == "constant":
        return ConstantHorizon(horizon)
    if kind == "log_uniform":
        return LogUniformHorizon(min_horizon, max_horizon)
    if kind == "never_ending":
        return NeverEnding()
    raise ValueError(f"truncation kind {kind!r} is unknown; use 'constant', 'log_uniform' or 'never_ending'.")
