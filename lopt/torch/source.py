"""Where a PyTorch learned optimizer gets theta: a file, a pretrained name, or ``(theta, lopt)``.

The file is the same safetensors theta file the JAX side writes with
:func:`lopt.learned.save_theta` (and ships in :mod:`lopt.pretrained`); it is read with
:func:`lopt.learned.load_theta`, which checks the file kind, the format version, the
architecture name and its config against the file's tensors, so a wrong or damaged file is
refused with a message naming what does not match.

Example:
    >>> import jax
    >>> import lopt.learned
    >>> from lopt.torch.source import resolve_theta
    >>> lopt_ = lopt.learned.get("learnable_sgdm")
    >>> arch, theta = resolve_theta((lopt_.init(jax.random.key(0)), lopt_))
    >>> arch.name, sorted(theta)
    ('learnable_sgdm', ['log_lr', 'logit_momentum'])
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

import jax
import numpy as np
import torch

from lopt.learned import load_theta
from lopt.learned.base import LearnedOptimizer as JaxLearnedOptimizer

__all__ = ["resolve_theta"]

_THETA_FILE = "theta.safetensors"


def _to_torch(theta: Any) -> Any:
    leaves, treedef = jax.tree.flatten(theta)
    tensors = [torch.from_numpy(np.array(leaf, dtype=np.float32)) for leaf in leaves]
    return jax.tree.unflatten(treedef, tensors)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".safetensors") or text.startswith(".")


def _from_pretrained(name: str) -> tuple[Any, JaxLearnedOptimizer]:
    try:
        pretrained = importlib.import_module("lopt.pretrained")
    except ImportError:
        raise ValueError(
            f"{name!r} is neither a theta file nor a pretrained optimizer (this lopt ships no "
            "pretrained weights); pass the path of a .safetensors theta file."
        ) from None
    available = tuple(pretrained.names())
    if name not in available:
        raise ValueError(
            f"unknown pretrained learned optimizer {name!r} (and no file of that name); "
            f"choose one of {available} or pass the path of a .safetensors theta file."
        )
    return pretrained.load(name)


def resolve_theta(source: Any) -> tuple[JaxLearnedOptimizer, Any]:
    """Reads theta and its architecture from a path, a pretrained name, or ``(theta, lopt)``.

    Args:
        source: one of

            * a path (``str`` or ``os.PathLike``) to a theta file written by
              :func:`lopt.learned.save_theta`, or to a folder holding ``theta.safetensors``
              (a ``lopt train`` run);
            * the name of a pretrained optimizer (:func:`lopt.pretrained.names`);
            * a pair ``(theta, learned_optimizer)`` as returned by
              :func:`lopt.learned.load_theta` or :func:`lopt.pretrained.load`.

    Returns:
        ``(arch, theta)``: the JAX learned optimizer (its name and config) and theta as the
        same tree of float32 CPU ``torch.Tensor``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not a theta file, or whose tensors do not fit its
            architecture; an unknown pretrained name; a theta that does not fit the given
            learned optimizer.
        TypeError: anything else (a bare theta without its architecture, a state dict...).
    """
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], JaxLearnedOptimizer):
        theta, arch = source
        arch.check_theta(theta)
        return arch, _to_torch(theta)
    if isinstance(source, (os.PathLike, str)):
        path = pathlib.Path(source)
        if path.is_dir() and (path / _THETA_FILE).is_file():
            path = path / _THETA_FILE
        if path.is_file():
            theta, arch = load_theta(path)
            return arch, _to_torch(theta)
        if isinstance(source, os.PathLike) or _looks_like_path(source):
            raise FileNotFoundError(
                f"no theta file at {str(source)!r}; pass the path of a .safetensors file written "
                "by lopt.learned.save_theta (or a lopt train run folder), or a pretrained name."
            )
        theta, arch = _from_pretrained(source)
        return arch, _to_torch(theta)
    raise TypeError(
        f"cannot read theta from a {type(source).__name__}; pass a theta file path, a "
        "pretrained name, or the pair (theta, learned_optimizer) that lopt.learned.load_theta "
        "returns (a bare theta does not say which architecture it belongs to)."
    )
