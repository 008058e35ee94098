"""Pretrained learned optimizers shipped inside lopt: load offline, train with no learning rate.

The weights are package data (safetensors with a SHA-256 digest, architecture and config in
the header), so they load on a machine with no network. ``default`` is the ``nominal``
architecture meta-trained by lopt's campaign on the ``taskset`` mixture (see
``docs/pretrained.md`` for what it was trained on, its compute and its held-out results).

Example:
    >>> import jax, jax.numpy as jnp, optax, lopt
    >>> "default" in lopt.pretrained.names()
    True
    >>> opt = lopt.pretrained.optimizer(num_steps=100)       # no learning rate to choose
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> state = opt.init(params)
    >>> loss, grads = jax.value_and_grad(lambda p: jnp.sum((p["w"] @ jnp.ones(2) - 1.0) ** 2))(params)
    >>> updates, state = opt.update(grads, state, params, loss=loss)
    >>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import optax

from lopt.learned.base import LearnedOptimizer
from lopt.learned.serialization import load_theta

__all__ = ["load", "names", "optimizer", "path"]

_WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights"


def names() -> tuple[str, ...]:
    """Names of the shipped pretrained optimizers, sorted."""
    return tuple(sorted(p.stem for p in _WEIGHTS.glob("*.safetensors")))


def path(name: str = "default") -> pathlib.Path:
    """The weight file of ``name`` inside the installed package.

    Raises:
        ValueError: unknown name (lists the shipped ones).
    """
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"unknown pretrained optimizer {name!r}; the shipped ones are {names()}.")
    return _WEIGHTS / f"{name}.safetensors"


@functools.lru_cache(maxsize=8)
def _load(name: str) -> tuple[Any, LearnedOptimizer]:
    return load_theta(path(name))


def load(name: str = "default") -> tuple[Any, LearnedOptimizer]:
    """Returns ``(theta, learned_optimizer)`` of a shipped optimizer (read once, then cached).

    Example:
        >>> import lopt
        >>> theta, lopt_ = lopt.pretrained.load()
        >>> lopt_.name
        'nominal'
    """
    return _load(name)


def optimizer(name: str = "default", *, num_steps: int | None = None, state_dtype: str | None = None,
              kernel: str | None = None, kernel_precision: str | None = None) -> optax.GradientTransformationExtraArgs:
    """The pretrained optimizer as an optax transformation: a drop-in for ``optax.adam(...)``.

    Args:
        name: which shipped optimizer (see :func:`names`).
        num_steps: the number of training steps you will run. With it the optimizer follows its
            learned schedule (warm-up and decay over the run); without it the schedule is held
            at a fixed point (no final decay), which is usually somewhat worse.
        state_dtype: ``"bfloat16"`` keeps the optimizer's per-parameter state in half the memory
            (12 instead of 24 bytes per parameter for the default optimizer), rounded
            stochastically (:mod:`lopt.learned.stochastic_rounding`); ``None`` (the default):
            float32, as the shipped weights were trained and evaluated. See docs/pretrained.md
            for how the two compare.
        kernel: ``"auto"`` steps with the fused GPU kernel (:mod:`lopt.kernels.nominal_step`, this
            optimizer's fixed weights compiled into it) and with the XLA path off GPU; at 100M
            parameters on an H100 a step took 4.63 ms against 7.05 through XLA (docs/kernels.md).
            ``None`` (the default) follows :mod:`lopt.kernels`' global mode (``"xla"`` unless set).
            The same results to float32 rounding either way.
        kernel_precision: ``"float16"`` evaluates the network inside the fused kernel in packed
            float16, two parameters per instruction (:mod:`lopt.kernels.packed_half`: 28% fewer
            instructions in the step's main pass; updates within ~4e-4 of the float32 step's, not
            yet timed on a GPU); ``None`` or ``"float32"``: as trained. Only the fused kernel reads it.

    Returns:
        ``optax.GradientTransformationExtraArgs``; call ``update(grads, state, params)``
        (``params`` is required: the optimizer reads parameter values).
    """
    theta, lopt_ = load(name)
    options = {k: v for k, v in (("state_dtype", state_dtype), ("kernel", kernel),
                                 ("kernel_precision", kernel_precision)) if v is not None}
    if options:
        lopt_ = lopt_.with_execution_options(**options)
    return lopt_.optimizer(theta, num_steps=num_steps)
