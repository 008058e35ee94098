"""Hyperparameter checks shared by every baseline optimizer factory.

Every check looks only at *concrete* values (Python numbers, numpy scalars, concrete 0-d
arrays). A traced value (inside ``jax.jit`` or ``jax.vmap``) is passed through unchecked, so
that e.g. ``jax.vmap(lambda lr: run(adam(lr)))(lrs)`` works; the caller is then responsible for
its range.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "BETA",
    "FRACTION",
    "NON_NEGATIVE",
    "POSITIVE",
    "Interval",
    "check_bool",
    "check_choice",
    "check_count",
    "check_known",
    "check_number",
    "require_params",
]


class Interval(NamedTuple):
    """A range of valid values, printed in interval notation, e.g. ``[0, 1)``."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    def __contains__(self, x: object) -> bool:
        x = float(x)  # type: ignore[arg-type]
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def __str__(self) -> str:
        def fmt(v: float) -> str:
            return "inf" if math.isinf(v) else f"{v:g}"

        left = "[" if self.low_closed else "("
        right = "]" if self.high_closed else ")"
        return f"{left}{fmt(self.low)}, {fmt(self.high)}{right}"


POSITIVE = Interval(0.0, math.inf, False, False)
"""Learning rates, step counts: ``(0, inf)``."""
NON_NEGATIVE = Interval(0.0, math.inf, True, False)
"""eps, weight decays, regularisers, decay rates: ``[0, inf)``."""
BETA = Interval(0.0, 1.0, True, False)
"""Moving-average decays (b1, b2, momentum, rmsprop decay): ``[0, 1)``."""
FRACTION = Interval(0.0, 1.0, True, True)
"""Fractions of training and multipliers: ``[0, 1]``."""


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def check_number(
    opt: str, name: str, value: Any, interval: Interval, example: float
) -> float | None:
    """Checks that a hyperparameter is a real scalar inside ``interval``.

    Args:
        opt: the optimizer's name, which starts the error message.
        name: the hyperparameter's name.
        value: the value given: a Python or numpy number, a 0-d array, or a tracer.
        interval: the valid range.
        example: a sensible value to suggest in the error message.

    Returns:
        The value as a Python float, or ``None`` when it is traced (and so not checked).

    Raises:
        TypeError: if ``value`` is not a real number (bools and strings included).
        ValueError: if ``value`` is not a scalar, not finite, or outside ``interval``.

    Example:
        >>> check_number("adam", "b1", 0.9, BETA, example=0.9)
        0.9
        >>> check_number("adam", "b1", 1.2, BETA, example=0.9)
        Traceback (most recent call last):
        ...
        ValueError: adam: b1=1.2 is outside [0, 1); use a value like 0.9.
    """
    if _is_traced(value):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.number, np.ndarray, jax.Array)
    ):
        raise TypeError(
            f"{opt}: {name}={value!r} has type {type(value).__name__}, not a real number; "
            f"pass a float such as {name}={example}."
        )
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"{opt}: {name} is an array of dtype {array.dtype}, not of real numbers; "
            f"pass a float such as {name}={example}."
        )
    if array.ndim != 0:
        raise ValueError(
            f"{opt}: {name} has shape {array.shape}; pass a scalar. To try several values at "
            f"once, jax.vmap over the factory, e.g. jax.vmap(lambda v: run({opt}({name}=v)))(values)."
        )
    number = float(array)
    if not math.isfinite(number):
        raise ValueError(f"{opt}: {name}={number} is not finite; use a value like {example}.")
    if number not in interval:
        raise ValueError(
            f"{opt}: {name}={number:g} is outside {interval}; use a value like {example}."
        )
    return number


def check_bool(opt: str, name: str, value: Any, *, traceable: bool) -> bool | None:
    """Checks that a flag is a bool (or, when ``traceable``, a traced bool).

    Args:
        opt: the optimizer's name, which starts the error message.
        name: the flag's name.
        value: the value given.
        traceable: whether a traced value is allowed (the update then selects with
            ``jnp.where``) or the flag must be a Python bool (it selects code at construction).

    Returns:
        The flag as a Python bool, or ``None`` when it is traced.

    Raises:
        TypeError: if ``value`` is not a bool, or is traced where that is not allowed.
    """
    if _is_traced(value):
        if traceable and value.dtype == np.bool_ and value.ndim == 0:
            return None
        fix = (
            "pass a scalar bool array"
            if traceable
            else "it selects the update rule when the optimizer is built, so pass a Python bool"
        )
        raise TypeError(
            f"{opt}: {name} is a traced {value.dtype} array of shape {value.shape}; {fix}."
        )
    is_bool_array = isinstance(value, (np.ndarray, jax.Array)) and value.dtype == np.bool_
    if isinstance(value, (bool, np.bool_)) or (is_bool_array and value.ndim == 0):
        return bool(value)
    raise TypeError(f"{opt}: {name}={value!r} has type {type(value).__name__}; pass True or False.")


def check_count(opt: str, name: str, value: Any, example: int) -> int:
    """Checks that ``value`` is a concrete int >= 1 (a number of points or draws).

    Raises:
        TypeError: if ``value`` is not an int (bools included).
        ValueError: if ``value`` < 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{opt}: {name}={value!r} has type {type(value).__name__}; pass an int such as "
            f"{name}={example}."
        )
    if value < 1:
        raise ValueError(f"{opt}: {name}={value} is below 1; use a value like {example}.")
    return int(value)


def check_choice(kind: str, name: Any, valid: Iterable[str]) -> str:
    """Checks that ``name`` is one of ``valid``; the error lists them and the closest match.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if ``name`` is not in ``valid``.
    """
    valid = tuple(valid)
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a string, got {name!r}; valid: {', '.join(valid)}.")
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}.{hint}")
    return name


def check_known(opt: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Checks that every hyperparameter name in ``given`` is in ``valid``.

    Raises:
        ValueError: naming the unknown hyperparameters and listing the valid ones.
    """
    valid = tuple(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        hints = [
            f"{u!r} -> {m[0]!r}" for u in unknown if (m := difflib.get_close_matches(u, valid, n=1))
        ]
        hint = f" Did you mean {', '.join(hints)}?" if hints else ""
        raise ValueError(
            f"{opt}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(valid)}.{hint}"
        )


def require_params(opt: str, params: Any, why: str) -> None:
    """Raises ``ValueError`` if an update that needs ``params`` was called without them."""
    if params is None:
        raise ValueError(
            f"{opt}: update() needs the current params ({why}); "
            "call opt.update(grads, state, params)."
        )
