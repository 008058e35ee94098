"""Population bookkeeping for self-training: ranking, teachers, copying and perturbation.

Metz et al. 2021 ("Training learned optimizers with randomly initialized learned optimizers",
arXiv 2101.07367) outer-train a population of learned optimizers in which the members train
each other, with population-based training (PBT) on held-out meta-loss: every generation the
worst members are replaced by perturbed copies of the best. These are the small pure functions
of that loop, on per-member scores (lower is better; NaN counts as worst) and on lists of
member pytrees; :mod:`lopt.meta.selftrain` runs them.

Example:
    >>> import numpy as np
    >>> scores = np.array([0.3, np.nan, 0.1, 0.2])
    >>> rank_members(scores).tolist()
    [2, 3, 0, 1]
    >>> replacements(scores, 2)
    {1: 2, 0: 3}
    >>> choose_teachers(scores, "best", seed=0, generation=0)
    [2, 2, 2, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["TEACHER_MODES", "apply_replacements", "choose_teachers", "perturb", "rank_members", "replacements"]

#: How a member's outer optimizer (its teacher) is chosen each generation (``"adam:LR"`` is the baseline).
TEACHER_MODES = ("best", "self", "random")


def _scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence (one per member), got shape {array.shape}.")
    return np.where(np.isfinite(array), array, np.inf)


def rank_members(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Member indices from best (lowest score) to worst; non-finite scores last; ties by index."""
    return np.argsort(_scores(scores), kind="stable")


def replacements(scores: Sequence[float] | np.ndarray, num_replace: int) -> dict[int, int]:
    """``{worst member: best member it becomes a copy of}`` for the ``num_replace`` worst members.

    The worst member gets the best, the second worst the second best, and so on; at most half
    of the population is replaced, so no member is both a source and a target.

    Raises:
        ValueError: ``num_replace`` negative or above half the population.
    """
    order = rank_members(scores)
    if isinstance(num_replace, bool) or not isinstance(num_replace, (int, np.integer)) or num_replace < 0:
        raise ValueError(f"num_replace={num_replace!r} must be a non-negative int.")
    if num_replace > len(order) // 2:
        raise ValueError(f"num_replace={num_replace} replaces more than half of a population of {len(order)}; "
                         f"use at most {len(order) // 2}.")
    worst, best = order[::-1][:num_replace], order[:num_replace]
    return {int(w): int(b) for w, b in zip(worst, best)}


def choose_teachers(scores: Sequence[float] | np.ndarray, mode: str, *, seed: int, generation: int) -> list[int]:
    """Each member's teacher: the member whose theta is its outer optimizer for one generation.

    Args:
        scores: the members' latest held-out scores.
        mode: ``"best"`` (every member is trained by the best one, itself included), ``"self"``
            (every member trains itself) or ``"random"`` (a uniformly random member, possibly itself).
        seed: the run's seed; with ``generation`` it fixes the random draw (resumes repeat it).
        generation: the generation about to be trained.
    """
    n = len(_scores(scores))
    if mode == "best":
        return [int(rank_members(scores)[0])] * n
    if mode == "self":
        return list(range(n))
    if mode == "random":
        return np.random.default_rng([seed, generation]).integers(0, n, size=n).tolist()
    raise ValueError(f"teacher={mode!r} is unknown; use one of {TEACHER_MODES} or 'adam:LR' (the baseline).")


def apply_replacements(members: Sequence[Any], mapping: Mapping[int, int]) -> list[Any]:
    """A new member list where each target index in ``mapping`` holds its source's pytree."""
    out = list(members)
    for target, source in mapping.items():
        if not (0 <= target < len(out) and 0 <= source < len(out)):
            raise ValueError(f"replacement {target} <- {source} is outside a population of {len(out)}.")
        out[target] = members[source]
    return out


def perturb(theta: Any, std: float, *, key: jax.Array) -> Any:
    """``theta`` plus independent Gaussian noise of standard deviation ``std`` on every float leaf."""
    if not std >= 0:
        raise ValueError(f"perturbation std={std!r} must be >= 0.")
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, max(1, len(leaves)))
    noisy = [leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)
