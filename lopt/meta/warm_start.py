"""Warm starts: continue meta-training from a few-MB file on another machine.

A warm-start file holds theta and the outer optimizer's state (safetensors, SHA-256 checked,
no pickle) with the architecture's name and config. Unlike a full checkpoint it holds no inner
training state, so a campaign can move between machines and sessions and start fresh inner
tasks each time. ``lopt train --init-from PATH`` accepts one, or a plain theta file
(:func:`lopt.learned.save_theta`; the outer optimizer then starts fresh).

Example:
    >>> import os, tempfile, jax, optax, lopt
    >>> lopt_ = lopt.learned.get("learnable_adam")
    >>> theta = lopt_.init(jax.random.key(0))
    >>> outer = optax.adam(1e-3)
    >>> path = os.path.join(tempfile.mkdtemp(), "warm_start.safetensors")
    >>> _ = save_warm_start(path, lopt_, theta, outer.init(theta), extra={"outer_steps": 10})
    >>> theta2, state2, meta = load_warm_start(path, lopt_, outer_like=outer.init(theta))
    >>> meta["extra"]["outer_steps"], state2 is not None
    (10, True)
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from lopt import checkpoint
from lopt.learned.base import LearnedOptimizer
from lopt.learned.serialization import load_theta, stored_config

__all__ = ["file_optimizer", "load_warm_start", "save_warm_start"]

_KIND = "lopt.warm_start"
_VERSION = 1


def save_warm_start(path: str | os.PathLike, lopt_: LearnedOptimizer, theta: Any, outer_state: Any, *,
                    extra: dict[str, Any] | None = None) -> pathlib.Path:
    """Writes theta and the outer-optimizer state atomically, with the architecture and config."""
    lopt_.check_theta(theta)
    meta = {"kind": _KIND, "version": _VERSION, "architecture": lopt_.name, "config": lopt_.config(),
            "extra": extra or {}}
    return checkpoint.save_tree(path, {"theta": theta, "outer_state": outer_state}, meta)


def _existing(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"warm start {str(path)!r} does not exist; pass a warm_start.safetensors or a "
                                "theta.safetensors written by `lopt train`.")
    return path


def file_optimizer(path: str | os.PathLike) -> LearnedOptimizer:
    """The learned optimizer a warm-start or theta file was written for (its architecture and config).

    Example:
        >>> import jax, lopt, tempfile, os
        >>> arch = lopt.learned.NominalLOpt(step_size="distance")
        >>> path = os.path.join(tempfile.mkdtemp(), "theta.safetensors")
        >>> _ = lopt.learned.save_theta(path, arch, arch.init(jax.random.key(0)))
        >>> file_optimizer(path).step_size
        'distance'
    """
    from lopt.learned import registry

    meta = checkpoint.read_metadata(_existing(path))
    if "architecture" not in meta:
        raise ValueError(f"{str(path)!r} records no architecture; pass a warm_start.safetensors or a theta file.")
    return registry.get(meta["architecture"], **(meta.get("config") or {}))


def load_warm_start(path: str | os.PathLike, lopt_: LearnedOptimizer, *, outer_like: Any = None
                    ) -> tuple[Any, Any | None, dict[str, Any]]:
    """Reads a warm-start file or a theta file for ``lopt_``.

    Args:
        path: a file written by :func:`save_warm_start` or by :func:`lopt.learned.save_theta`.
        lopt_: the learned optimizer the run trains (architecture and config must match).
        outer_like: the outer-optimizer state the run expects; a stored state of another
            structure (another outer optimizer) is dropped and the outer optimizer starts fresh.

    Returns:
        ``(theta, outer_state or None, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file belongs to another architecture or config (names what differs).
    """
    path = _existing(path)
    meta = checkpoint.read_metadata(path)
    if meta.get("kind") != _KIND:
        theta, _ = load_theta(path, lopt_)
        return theta, None, meta
    if meta.get("architecture") != lopt_.name or stored_config(lopt_.name, meta.get("config") or {}) != lopt_.config():
        raise ValueError(f"{str(path)!r} holds theta of `{meta.get('architecture')}` with config {meta.get('config')}, "
                         f"but this run trains `{lopt_.name}` with config {lopt_.config()}; set lopt.name/lopt.config "
                         "to match or start without --init-from.")
    if outer_like is not None:
        try:
            tree, _ = checkpoint.load_tree(path, like={"theta": lopt_.theta_spec(), "outer_state": outer_like})
            return tree["theta"], tree["outer_state"], meta
        except ValueError:  # another outer optimizer's state: read theta alone, the outer one starts fresh
            pass
    tree, _ = checkpoint.load_tree(path)
    lopt_.check_theta(tree["theta"])
    return tree["theta"], None if outer_like is not None else tree.get("outer_state"), meta
