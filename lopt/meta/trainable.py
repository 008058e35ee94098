"""Meta-training part of theta: ``outer.trainable``, a pattern over theta's leaf names.

A learned optimizer's theta mixes a few global numbers (a learning rate, schedule knots, tensor
multipliers) with a per-parameter network of a few hundred weights. Evolution-strategies
estimates get noisier with every dimension they perturb, so training only the global part is a
different, much better-conditioned problem: ``outer.trainable="schedule|log_lr"`` perturbs and
updates only the leaves whose names (``"network/w0"``, ``"schedule"``; see
:func:`lopt.analysis.layout.leaf_names`) match the regular expression, and holds the others
exactly where the warm start put them. ``""`` (the default) trains everything.

Example:
    >>> import jax.numpy as jnp, optax
    >>> theta = {"network": {"w0": jnp.ones(2)}, "schedule": jnp.zeros(3)}
    >>> trainable_mask(theta, "schedule")
    [False, True]
    >>> outer = freeze_except(optax.sgd(1.0), "schedule")
    >>> grads = {"network": {"w0": jnp.ones(2)}, "schedule": jnp.ones(3)}
    >>> updates, _ = outer.update(grads, outer.init(theta), theta)
    >>> updates["network"]["w0"].tolist(), updates["schedule"].tolist()
    ([0.0, 0.0], [-1.0, -1.0, -1.0])
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.analysis.layout import leaf_names

__all__ = ["freeze_except", "trainable_mask", "zero_frozen"]


def _compile(pattern: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"outer.trainable must be a string (a regular expression over theta's leaf names), "
                        f"got {pattern!r}.")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"outer.trainable={pattern!r} is not a valid regular expression ({err}); "
                         "use e.g. 'schedule|log_lr'.") from None


def trainable_mask(theta: Any, pattern: str) -> list[bool]:
    """One flag per leaf of ``theta`` (in flattening order): does its name match ``pattern``?

    Args:
        theta: a learned optimizer's parameters.
        pattern: a regular expression searched in each leaf's name; ``""`` matches every leaf.

    Raises:
        TypeError: ``pattern`` is not a string.
        ValueError: ``pattern`` is not a regular expression, or it matches no leaf (the message
            lists the names it could match).
    """
    regex = _compile(pattern)
    names = leaf_names(theta)
    mask = [bool(regex.search(name)) for name in names]
    if not any(mask):
        raise ValueError(f"outer.trainable={pattern!r} matches none of theta's leaves {names}; "
                         "give a pattern that matches at least one (or '' to train all of theta).")
    return mask


def zero_frozen(tree: Any, pattern: str) -> Any:
    """``tree`` (theta-shaped, possibly with leading axes) with every frozen leaf set to zero."""
    if not pattern:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    mask = trainable_mask(tree, pattern)
    return jax.tree.unflatten(treedef, [x if keep else jnp.zeros_like(x) for x, keep in zip(leaves, mask)])


def freeze_except(outer: optax.GradientTransformation, pattern: str) -> optax.GradientTransformationExtraArgs:
    """``outer`` restricted to the leaves matching ``pattern``: frozen leaves get zero gradient and zero update.

    The state is ``outer``'s own (same structure), so a warm start's outer state loads unchanged;
    zeroing the gradient first keeps frozen leaves out of global-norm clipping, zeroing the update
    after keeps a warm-started momentum from moving them.
    """
    outer = optax.with_extra_args_support(outer)
    if not pattern:
        return outer

    def update(grads, state, params=None, **extra):
        updates, state = outer.update(zero_frozen(grads, pattern), state, params, **extra)
        return zero_frozen(updates, pattern), state

    return optax.GradientTransformationExtraArgs(outer.init, update)
