"""What a probe looks at: any optax transformation, a learned optimizer with its theta, or a name.

Every probe in :mod:`lopt.analysis` takes a :class:`Subject`, built by :func:`as_subject` from
whatever the user has: an ``optax`` transformation (``optax.adam(1e-3)``), a
:class:`~lopt.learned.LearnedOptimizer` and its ``theta``, the path of a theta file written by
:func:`lopt.learned.save_theta` (or a ``lopt train`` output directory), or a name the command line
accepts (``adam``, ``optax.lion``, ``learnable_adam``; see :func:`lopt.evaluate.resolve`).
Probes treat the optimizer as a black box: they only call ``init`` and
``update(grads, state, params, loss=...)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import optax

from lopt.learned.base import LearnedOptimizer

__all__ = ["Subject", "as_subject"]


@dataclasses.dataclass(frozen=True, eq=False)
class Subject:
    """An optimizer under analysis (hashed by identity: a static argument of the probes' programs).

    Attributes:
        label: its name in figures and cards.
        optimizer: the optax transformation (with extra-args support: ``loss=`` is passed).
        lopt: the learned optimizer, if it is one (``None`` for hand-designed optax).
        theta: its meta-parameters (``None`` for hand-designed optax).
    """

    label: str
    optimizer: optax.GradientTransformationExtraArgs
    lopt: LearnedOptimizer | None = None
    theta: Any = None

    @property
    def is_learned(self) -> bool:
        """Whether the subject has meta-parameters (meta-gradient probes need them)."""
        return self.lopt is not None

    def with_theta(self, theta: Any, *, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The same learned optimizer built from other meta-parameters (for meta-gradient probes)."""
        if self.lopt is None:
            raise TypeError(f"{self.label!r} is a hand-designed optax optimizer without theta; meta-gradient "
                            "probes need a learned optimizer (e.g. learnable_adam for Adam).")
        return self.lopt.optimizer(theta, num_steps=num_steps)


def as_subject(optimizer: Any, *, theta: Any = None, num_steps: int | None = None,
               label: str | None = None) -> Subject:
    """Builds a :class:`Subject` from an optax transformation, a learned optimizer, a path or a name.

    Args:
        optimizer: an ``optax.GradientTransformation``; a :class:`~lopt.learned.LearnedOptimizer`
            (with ``theta``; without it, its ``init(key(0))`` theta, labelled ``NAME@init``); a theta
            file or ``lopt train`` directory; ``pretrained:NAME`` (a shipped optimizer, see
            :mod:`lopt.pretrained`); a name accepted by :func:`lopt.evaluate.resolve`; or a
            :class:`Subject` (returned as is).
        theta: meta-parameters, with a learned optimizer.
        num_steps: the horizon: required by learned optimizers and baselines that need one, and
            passed on to learned optimizers that only use it (a learned schedule).
        label: name in figures (default: derived from the input).

    Returns:
        The subject.

    Raises:
        TypeError: an object that is none of the above, or ``theta`` given with a non-learned optimizer.
        ValueError: ``theta`` does not fit the learned optimizer; an unknown name.

    Example:
        >>> import optax
        >>> as_subject(optax.sgd(0.1, momentum=0.9), label="sgdm").label
        'sgdm'
        >>> as_subject("learnable_adam").label
        'learnable_adam@init'
    """
    if isinstance(optimizer, Subject):
        return optimizer if label is None else dataclasses.replace(optimizer, label=label)
    if theta is not None and not isinstance(optimizer, LearnedOptimizer):
        raise TypeError(f"theta was given with {type(optimizer).__name__}; theta belongs to a "
                        "lopt.learned.LearnedOptimizer (e.g. lopt.learned.get('mlp')).")
    if isinstance(optimizer, LearnedOptimizer):
        if theta is None:
            theta, default = optimizer.init(jax.random.key(0)), f"{optimizer.name}@init"
        else:
            default = optimizer.name
        if optimizer.requires_num_steps() and num_steps is None:
            raise ValueError(f"the `{optimizer.name}` learned optimizer needs the horizon: pass num_steps=T.")
        # given, the horizon is passed on even where it is optional: it places a learned schedule
        return Subject(label or default, optimizer.optimizer(theta, num_steps=num_steps), optimizer, theta)
    if isinstance(optimizer, optax.GradientTransformation):
        return Subject(label or "optimizer", optax.with_extra_args_support(optimizer))
    if isinstance(optimizer, str) and optimizer.startswith("pretrained:"):
        import importlib

        theta, lopt_ = importlib.import_module("lopt.pretrained").load(optimizer.partition(":")[2])
        return as_subject(lopt_, theta=theta, num_steps=num_steps, label=label or optimizer)
    if isinstance(optimizer, (str, os.PathLike)):
        from lopt.evaluate import resolve

        spec = resolve(os.fspath(optimizer))
        horizon = 1000 if num_steps is None else int(num_steps)
        built = spec.factory(spec.settings[0], spec.theta, horizon)
        if spec.factory.kind == "learned":
            return Subject(label or spec.label, optax.with_extra_args_support(built), spec.factory.architecture,
                           spec.theta)
        return Subject(label or spec.label, optax.with_extra_args_support(built))
    raise TypeError(f"cannot analyse {type(optimizer).__name__}: pass an optax transformation (optax.adam(1e-3)), "
                    "a lopt learned optimizer with theta, a theta file path, or a name such as 'adam'.")
