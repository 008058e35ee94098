"""Random-search spaces for the baseline optimizers, and the learning-rate grid.

Each optimizer of :func:`~lopt.optimizers.names` has a search space: a dict from hyperparameter
name to a :class:`Dimension` (how that value is drawn). Scale-like values (learning rates, eps,
weight decays, decay rates) are log-uniform; moving-average decays are drawn as ``1 - x`` with
``x`` log-uniform, so that 0.9, 0.99 and 0.999 are equally likely.

The spaces of ``adam``, ``adam8p`` and ``nadamw`` are TaskSet's (Metz et al., arXiv 2002.11887;
google-research ``task_set/optimizers/adam.py`` ``adam4p_wide_grid``, ``adam8p.py``
``adam8p_wide_grid`` and ``nadamw.py`` ``nadamw_grid``). Those of ``sgd``, ``momentum`` and
``rmsprop`` are ours, equally wide:

============  ======================  ==================================================
optimizer     hyperparameter          distribution
============  ======================  ==================================================
sgd           learning_rate           log-uniform [1e-5, 10]
momentum      learning_rate           log-uniform [1e-5, 10]
momentum      momentum                1 - log-uniform [1e-3, 1]
rmsprop       learning_rate           log-uniform [1e-6, 1]
rmsprop       decay                   1 - log-uniform [1e-3, 1]
rmsprop       eps                     log-uniform [1e-10, 1]
rmsprop       momentum                1 - log-uniform [1e-2, 1]
adam          learning_rate           log-uniform [1e-8, 10]
adam          b1                      1 - log-uniform [1e-4, 1]
adam          b2                      1 - log-uniform [1e-6, 1]
adam          eps                     log-uniform [1e-10, 1e3]
adam8p        (adam's four, and)
adam8p        l1, l2                  log-uniform [1e-8, 10]
adam8p        linear_decay            log-uniform [1e-7, 1e-4]
adam8p        exponential_decay       log-uniform [1e-6, 1e-3]
nadamw        learning_rate           log-uniform [1e-5, 1]
nadamw        b1                      1 - log-uniform [1e-3, 1]
nadamw        b2                      1 - log-uniform [1e-5, 1]
nadamw        eps                     log-uniform [1e-8, 1e4]
nadamw        nesterov                True with probability 1/2
nadamw        adamw_weight_decay,     log-uniform [1e-5, 0.1] each; then, with
              l2_weight_decay         probability 1/3 each, l2 is 0, adamw is 0, or neither
nadamw        warmup_fraction         0 w.p. 1/2, else log-uniform [1e-5, 0.1]
nadamw        min_learning_rate_mult  0 w.p. 1/2, else log-uniform [1e-5, 1]
nadamw        constant_fraction       uniform [0, 1]
============  ======================  ==================================================

A ``nadamw`` sample with a warmup or decay needs ``total_steps``:
``get("nadamw", total_steps=T, **sample_hparams("nadamw", key))``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.optimizers.registry import names
from lopt.optimizers.validation import POSITIVE, check_choice, check_count, check_number

__all__ = [
    "Bernoulli",
    "Dimension",
    "LogUniform",
    "OneMinusLogUniform",
    "Uniform",
    "ZeroOr",
    "learning_rate_grid",
    "sample_hparams",
    "search_space",
]

_RTOL = 1e-6  # float32 rounding allowance in ``contains``


class LogUniform(NamedTuple):
    """``exp(uniform(log(low), log(high)))``."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.exp(rng.uniform(np.log(self.low), np.log(self.high), size))

    def contains(self, x: Any) -> bool:
        return self.low * (1 - _RTOL) <= float(x) <= self.high * (1 + _RTOL)


class OneMinusLogUniform(NamedTuple):
    """``1 - x`` with ``x`` log-uniform in ``[low, high]``: for moving-average decays."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return 1.0 - LogUniform(self.low, self.high).sample(rng, size)

    def contains(self, x: Any) -> bool:
        return LogUniform(self.low, self.high).contains(1.0 - float(x)) and float(x) < 1.0


class Uniform(NamedTuple):
    """Uniform in ``[low, high]``."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def contains(self, x: Any) -> bool:
        return self.low <= float(x) <= self.high


class Bernoulli(NamedTuple):
    """``True`` with probability ``p``."""

    p: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(0.0, 1.0, size) < self.p

    def contains(self, x: Any) -> bool:
        return isinstance(x, (bool, np.bool_))


class ZeroOr(NamedTuple):
    """0 with probability ``p_zero``, else a draw from ``dist``."""

    p_zero: float
    dist: LogUniform | Uniform

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        zero = rng.uniform(0.0, 1.0, size) < self.p_zero
        return np.where(zero, 0.0, self.dist.sample(rng, size))

    def contains(self, x: Any) -> bool:
        return float(x) == 0.0 or self.dist.contains(x)


Dimension = LogUniform | OneMinusLogUniform | Uniform | Bernoulli | ZeroOr

_ADAM = {  # TaskSet adam4p_wide_grid
    "learning_rate": LogUniform(1e-8, 1e1),
    "b1": OneMinusLogUniform(1e-4, 1.0),
    "b2": OneMinusLogUniform(1e-6, 1.0),
    "eps": LogUniform(1e-10, 1e3),
}

_SPACES: dict[str, dict[str, Dimension]] = {
    "sgd": {"learning_rate": LogUniform(1e-5, 1e1)},
    "momentum": {
        "learning_rate": LogUniform(1e-5, 1e1),
        "momentum": OneMinusLogUniform(1e-3, 1.0),
    },
    "rmsprop": {
        "learning_rate": LogUniform(1e-6, 1.0),
        "decay": OneMinusLogUniform(1e-3, 1.0),
        "eps": LogUniform(1e-10, 1.0),
        "momentum": OneMinusLogUniform(1e-2, 1.0),
    },
    "adam": _ADAM,
    "adam8p": {  # TaskSet adam8p_wide_grid
        **_ADAM,
        "l1": LogUniform(1e-8, 1e1),
        "l2": LogUniform(1e-8, 1e1),
        "linear_decay": LogUniform(1e-7, 1e-4),
        "exponential_decay": LogUniform(1e-6, 1e-3),
    },
    "nadamw": {  # TaskSet nadamw_grid
        "learning_rate": LogUniform(1e-5, 1.0),
        "b1": OneMinusLogUniform(1e-3, 1.0),
        "b2": OneMinusLogUniform(1e-5, 1.0),
        "eps": LogUniform(1e-8, 1e4),
        "nesterov": Bernoulli(0.5),
        "adamw_weight_decay": LogUniform(1e-5, 1e-1),
        "l2_weight_decay": LogUniform(1e-5, 1e-1),
        "warmup_fraction": ZeroOr(0.5, LogUniform(1e-5, 1e-1)),
        "min_learning_rate_mult": ZeroOr(0.5, LogUniform(1e-5, 1.0)),
        "constant_fraction": Uniform(0.0, 1.0),
    },
}


def _taskset_weight_decay_modes(
    hparams: dict[str, np.ndarray], rng: np.random.Generator, size: int
) -> None:
    """TaskSet's three weight-decay modes: decoupled only, L2 only, or both (1/3 each)."""
    mode = rng.integers(0, 3, size)
    hparams["l2_weight_decay"] = np.where(mode == 0, 0.0, hparams["l2_weight_decay"])
    hparams["adamw_weight_decay"] = np.where(mode == 1, 0.0, hparams["adamw_weight_decay"])


_JOINT_RULES: dict[str, Callable[[dict[str, np.ndarray], np.random.Generator, int], None]] = {
    "nadamw": _taskset_weight_decay_modes
}


def search_space(name: str) -> dict[str, Dimension]:
    """The search space of optimizer ``name`` (see the module docstring for all of them).

    For ``nadamw`` the two weight decays are also zeroed jointly (TaskSet's three modes), so
    either may be 0 although its dimension is log-uniform.

    Raises:
        ValueError: if ``name`` is unknown; the message lists the valid names.

    Example:
        >>> search_space("adam")["b1"]
        OneMinusLogUniform(low=0.0001, high=1.0)
    """
    return dict(_SPACES[check_choice("optimizer", name, names())])


def _rng(key: Any, name: str) -> np.random.Generator:
    """A numpy generator determined by ``key`` (an int seed or a jax PRNG key) and ``name``."""
    if isinstance(key, jax.core.Tracer):
        raise TypeError(
            "sample_hparams: key is traced; sampling draws concrete values on the host, so "
            "call it outside jax.jit / jax.vmap and pass the result in."
        )
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if key < 0:
            raise ValueError(f"sample_hparams: key={key} is negative; use a seed >= 0.")
        words = [int(key)]
    elif isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        words = np.asarray(jax.random.key_data(key)).ravel().tolist()
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        words = np.asarray(key).tolist()
    else:
        raise TypeError(
            f"sample_hparams: key={key!r} is not an int seed or a jax PRNG key; pass e.g. "
            "key=0 or key=jax.random.key(0)."
        )
    # Mixing in the name keeps the draws of different optimizers from the same key independent.
    return np.random.default_rng([*words, zlib.crc32(name.encode())])


def sample_hparams(name: str, key: Any, num: int | None = None) -> dict[str, Any]:
    """Draws hyperparameters of optimizer ``name`` from its search space (random search).

    Args:
        name: one of :func:`~lopt.optimizers.names`.
        key: an int seed (>= 0) or a jax PRNG key; the same key gives the same draws.
        num: ``None`` for one draw, or the number of draws.

    Returns:
        With ``num=None``, a dict of Python floats (and bools). Otherwise a dict of numpy
        arrays of length ``num`` (float32, or bool), ready to ``jax.vmap`` over. Either way
        ``get(name, **result)`` builds the optimizer (``nadamw`` also needs ``total_steps``).

    Raises:
        ValueError, TypeError: for an unknown name, a bad key or a bad ``num``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from lopt.optimizers import get
        >>> hp = sample_hparams("adam", key=0, num=4)
        >>> hp["learning_rate"].shape
        (4,)
        >>> def first_update(hp):
        ...     opt = get("adam", **hp)
        ...     return opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))[0]
        >>> jax.vmap(first_update)(hp).shape
        (4, 2)
    """
    space = search_space(name)
    size = 1 if num is None else check_count("sample_hparams", "num", num, example=16)
    rng = _rng(key, name)
    hparams = {k: dim.sample(rng, size) for k, dim in space.items()}
    if name in _JOINT_RULES:
        _JOINT_RULES[name](hparams, rng, size)
    if num is None:
        return {k: v[0].item() for k, v in hparams.items()}
    return {k: v if v.dtype == np.bool_ else v.astype(np.float32) for k, v in hparams.items()}


def learning_rate_grid(num: int = 15, low: float = 1e-4, high: float = 1.0) -> np.ndarray:
    """A log-spaced grid of learning rates, ``low`` and ``high`` included.

    The default is the 15-point grid used to tune the learning rate of baselines: ``1e-4`` to
    ``1``, neighbours about 1.93x apart (``10 ** (4 / 14)``). It spans Adam's useful range and
    the upper part of SGD's; pass ``low``/``high`` to move it.

    Args:
        num: number of points, >= 1.
        low: smallest learning rate, > 0.
        high: largest learning rate, >= ``low``.

    Returns:
        A float32 numpy array of shape ``(num,)``, increasing.

    Raises:
        ValueError, TypeError: for a bad ``num``, ``low`` or ``high``.

    Example:
        >>> learning_rate_grid(5, 1e-4, 1.0)
        array([1.e-04, 1.e-03, 1.e-02, 1.e-01, 1.e+00], dtype=float32)
    """
    check_count("learning_rate_grid", "num", num, example=15)
    low_ = check_number("learning_rate_grid", "low", low, POSITIVE, example=1e-4)
    high_ = check_number("learning_rate_grid", "high", high, POSITIVE, example=1.0)
    if low_ is None or high_ is None:
        raise TypeError("learning_rate_grid: low and high must be concrete numbers, not traced.")
    if high_ < low_:
        raise ValueError(f"learning_rate_grid: high={high_:g} is below low={low_:g}; swap them.")
    return np.geomspace(low_, high_, num).astype(np.float32)
