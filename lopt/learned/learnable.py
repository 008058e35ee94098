"""Hand-designed rules whose hyperparameters are theta: learnable Adam and SGD+momentum.

These are the simplest learned optimizers: theta holds a handful of reparameterised
hyperparameters (log learning rate, logit decays, log epsilon), so meta-training should
recover good values, which makes them the sanity check for a meta-training setup. At
their initial theta they reproduce ``optax.adam(lr, b1, b2, eps)`` and
``optax.sgd(lr, momentum)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import LearnableAdam
    >>> lopt_ = LearnableAdam(lr=1e-2)
    >>> theta = lopt_.init(jax.random.key(0))
    >>> sorted(theta)
    ['log_eps', 'log_lr', 'logit_b1', 'logit_b2']
    >>> opt = lopt_.optimizer(theta)
    >>> state = opt.init({"w": jnp.ones(2)})
    >>> upd, state = opt.update({"w": jnp.ones(2)}, state)
    >>> [round(u, 6) for u in upd["w"].tolist()]
    [-0.01, -0.01]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lopt.learned import base

__all__ = ["LearnableAdam", "LearnableAdamState", "LearnableSGDM", "LearnableSGDMState"]

_f32 = jnp.float32


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _check_unit(owner: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{owner}: {field}={value!r} must be a number in (0, 1).")


class LearnableAdamState(NamedTuple):
    """State of :class:`LearnableAdam`: step count and float32 moments."""

    count: jax.Array
    mu: Any
    nu: Any


@dataclasses.dataclass(frozen=True)
class LearnableAdam(base.LearnedOptimizer):
    """Adam with learnable log-lr, logit-betas and log-epsilon.

    theta: ``{"log_lr", "logit_b1", "logit_b2", "log_eps"}`` (float32 scalars), initialised
    at the config values. Inputs: gradient only. State: two float32 moments per parameter
    (8 bytes/param). About 12 FLOPs per parameter.

    Attributes:
        lr: initial learning rate.
        b1: initial first-moment decay.
        b2: initial second-moment decay.
        eps: initial epsilon (added to the root of the second moment, as in optax).

    Example:
        >>> import jax
        >>> theta = LearnableAdam().init(jax.random.key(0))
        >>> round(float(jax.numpy.exp(theta["log_lr"])), 6)
        0.001
    """

    name: ClassVar[str] = "learnable_adam"

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        base.check_positive(type(self).__name__, "lr", self.lr)
        base.check_positive(type(self).__name__, "eps", self.eps)
        _check_unit(type(self).__name__, "b1", self.b1)
        _check_unit(type(self).__name__, "b2", self.b2)

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update."""
        return 12

    def state_bytes_per_param(self) -> int:
        """Bytes of optimizer state per parameter."""
        return 8

    def init(self, key: jax.Array) -> dict[str, jax.Array]:
        """Returns theta at the configured hyperparameters (``key`` is unused)."""
        del key
        return {
            "log_lr": jnp.asarray(math.log(self.lr), _f32),
            "logit_b1": jnp.asarray(_logit(self.b1), _f32),
            "logit_b2": jnp.asarray(_logit(self.b2), _f32),
            "log_eps": jnp.asarray(math.log(self.eps), _f32),
        }

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        del num_steps
        lr = jnp.exp(theta["log_lr"])
        b1, one_minus_b1 = jax.nn.sigmoid(theta["logit_b1"]), jax.nn.sigmoid(-theta["logit_b1"])
        b2, one_minus_b2 = jax.nn.sigmoid(theta["logit_b2"]), jax.nn.sigmoid(-theta["logit_b2"])
        eps = jnp.exp(theta["log_eps"])

        def init(params):
            # Separate buffers for mu and nu: the state may be donated to a jitted step.
            mu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _f32), params)
            nu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _f32), params)
            return LearnableAdamState(jnp.zeros((), jnp.int32), mu, nu)

        def update(grads, state, params, loss, valid_loss):
            del params, loss, valid_loss
            g32 = jax.tree.map(lambda g: g.astype(_f32), grads)
            mu = jax.tree.map(lambda m, g: b1 * m + one_minus_b1 * g, state.mu, g32)
            nu = jax.tree.map(lambda v, g: b2 * v + one_minus_b2 * g * g, state.nu, g32)
            count = state.count + 1
            t = count.astype(_f32)
            c1 = 1.0 - b1**t
            c2 = 1.0 - b2**t
            updates = jax.tree.map(lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
            return updates, LearnableAdamState(count, mu, nu)

        return base.Transform(init, update)


class LearnableSGDMState(NamedTuple):
    """State of :class:`LearnableSGDM`: float32 momentum trace."""

    trace: Any


@dataclasses.dataclass(frozen=True)
class LearnableSGDM(base.LearnedOptimizer):
    """SGD with (heavy-ball) momentum and learnable log-lr and logit-momentum.

    Matches ``optax.sgd(lr, momentum)``: ``m <- momentum * m + g``, ``update = -lr * m``.
    theta: ``{"log_lr", "logit_momentum"}``. State: one float32 per parameter
    (4 bytes/param). About 4 FLOPs per parameter.

    Attributes:
        lr: initial learning rate.
        momentum: initial momentum in (0, 1).

    Example:
        >>> import jax
        >>> sorted(LearnableSGDM().init(jax.random.key(0)))
        ['log_lr', 'logit_momentum']
    """

    name: ClassVar[str] = "learnable_sgdm"

    lr: float = 0.01
    momentum: float = 0.9

    def __post_init__(self) -> None:
        base.check_positive(type(self).__name__, "lr", self.lr)
        _check_unit(type(self).__name__, "momentum", self.momentum)

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update."""
        return 4

    def state_bytes_per_param(self) -> int:
        """Bytes of optimizer state per parameter."""
        return 4

    def init(self, key: jax.Array) -> dict[str, jax.Array]:
        """Returns theta at the configured hyperparameters (``key`` is unused)."""
        del key
        return {
            "log_lr": jnp.asarray(math.log(self.lr), _f32),
            "logit_momentum": jnp.asarray(_logit(self.momentum), _f32),
        }

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        del num_steps
        lr = jnp.exp(theta["log_lr"])
        beta = jax.nn.sigmoid(theta["logit_momentum"])

        def init(params):
            return LearnableSGDMState(jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _f32), params))

        def update(grads, state, params, loss, valid_loss):
            del params, loss, valid_loss
            trace = jax.tree.map(lambda m, g: beta * m + g.astype(_f32), state.trace, grads)
            return jax.tree.map(lambda m: -lr * m, trace), LearnableSGDMState(trace)

        return base.Transform(init, update)
