"""Learned outer optimizers: a lopt learned optimizer updates theta (self-training).

``outer.optimizer`` normally names a hand-designed baseline (``"adam"``). Three more forms make
meta-training use a *learned* optimizer on theta, as in Metz et al. 2020 ("... and using them to
train themselves", arXiv 2009.11243):

* ``"pretrained"``: the shipped default learned optimizer (:mod:`lopt.pretrained`);
* ``"pretrained:NAME"``: the shipped optimizer ``NAME``;
* ``"lopt:PATH"``: the theta file at ``PATH`` (written by :func:`lopt.learned.save_theta`).

The learned optimizer receives the outer gradient, theta as its ``params`` and the meta-loss as
its ``loss``; its horizon (``num_steps``) is ``trainer.outer_steps``. It has no learning rate, so
``outer.learning_rate`` must stay at its default (setting it is an error, not silently ignored).

Example:
    >>> from lopt.meta.outer import parse_learned_outer
    >>> parse_learned_outer("pretrained"), parse_learned_outer("lopt:/tmp/theta.safetensors")
    (('pretrained', 'default'), ('lopt', '/tmp/theta.safetensors'))
    >>> parse_learned_outer("adam") is None
    True
"""

from __future__ import annotations

import os

import optax

from lopt.learned.serialization import load_theta

__all__ = ["learned_outer_optimizer", "parse_learned_outer"]

_FORMS = "'pretrained', 'pretrained:NAME' (a shipped optimizer) or 'lopt:PATH' (a theta file)"


def parse_learned_outer(spec: str) -> tuple[str, str] | None:
    """Splits a learned ``outer.optimizer`` spec into ``(kind, argument)``; ``None`` for a baseline name.

    Raises:
        ValueError: a ``pretrained:``/``lopt:`` spec with nothing after the colon.
    """
    if not isinstance(spec, str):
        raise TypeError(f"outer.optimizer must be a string, got {spec!r}.")
    if spec == "pretrained":
        return "pretrained", "default"
    for kind in ("pretrained", "lopt"):
        if spec.startswith(kind + ":"):
            argument = spec[len(kind) + 1:].strip()
            if not argument:
                raise ValueError(f"outer.optimizer={spec!r} names no {'optimizer' if kind == 'pretrained' else 'file'}; "
                                 f"use {_FORMS}.")
            return kind, argument
    return None


def learned_outer_optimizer(spec: str, *, num_steps: int, learning_rate: float,
                            default_learning_rate: float) -> optax.GradientTransformationExtraArgs | None:
    """The learned optimizer named by ``spec`` as an outer optimizer, or ``None`` for a baseline name.

    Args:
        spec: the ``outer.optimizer`` setting.
        num_steps: the learned optimizer's horizon: the number of outer steps.
        learning_rate: the ``outer.learning_rate`` setting (must equal ``default_learning_rate``
            for a learned outer optimizer, which has no learning rate).
        default_learning_rate: the default of ``outer.learning_rate``.

    Raises:
        ValueError: a bad spec, an unknown pretrained name, a missing or invalid theta file, a
            non-positive ``num_steps``, or ``outer.learning_rate`` set for a learned optimizer.
    """
    parsed = parse_learned_outer(spec)
    if parsed is None:
        return None
    if learning_rate != default_learning_rate:
        raise ValueError(f"outer.learning_rate={learning_rate} has no effect with outer.optimizer={spec!r}: a learned "
                         f"outer optimizer has no learning rate; remove the outer.learning_rate override (leave it at "
                         f"its default {default_learning_rate}).")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"trainer.outer_steps={num_steps!r} must be a positive int: it is the horizon of the "
                         f"learned outer optimizer {spec!r}.")
    kind, argument = parsed
    if kind == "pretrained":
        import lopt.pretrained  # lazy: the package reads its weight directory

        if argument not in lopt.pretrained.names():
            raise ValueError(f"outer.optimizer={spec!r}: unknown pretrained optimizer {argument!r}; the shipped ones "
                             f"are {lopt.pretrained.names()} (or use 'lopt:PATH' for a theta file).")
        return lopt.pretrained.optimizer(argument, num_steps=num_steps)
    if not os.path.isfile(argument):
        raise ValueError(f"outer.optimizer={spec!r}: no theta file at {argument!r}; give the path of a file written "
                         "by lopt.learned.save_theta (e.g. a run's theta.safetensors).")
    theta, lopt_ = load_theta(argument)
    return lopt_.optimizer(theta, num_steps=num_steps)
