"""Which implementation a learned optimizer's step uses: the plain XLA path or a fused kernel.

The mode is read when a step is traced (so a jitted step keeps the mode it was compiled
with). It comes from :func:`set_mode` / :func:`mode_scope`, else from the environment
variable ``LOPT_KERNELS``, else ``"xla"``:

* ``"xla"``: always the plain XLA path (the reference).
* ``"auto"``: the fused Pallas (Triton) kernel on GPU when the architecture's config is
  supported, the XLA path otherwise.
* ``"pallas"``: the fused kernel wherever the config is supported; off GPU it runs in
  Pallas interpret mode (slow, for tests).
* ``"interpret"``: the fused kernel in interpret mode everywhere (tests on CPU).

Example:
    >>> from lopt import kernels
    >>> with kernels.mode_scope("interpret"):
    ...     kernels.get_mode()
    'interpret'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax

__all__ = ["MODES", "check_option", "get_mode", "mode_scope", "resolve", "set_mode"]

MODES = ("xla", "auto", "pallas", "interpret")
ENV_VAR = "LOPT_KERNELS"

_mode: str | None = None


def _check(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"kernel mode {mode!r} is not one of {MODES}; e.g. set_mode('auto').")
    return mode


def get_mode() -> str:
    """The current mode: :func:`set_mode`'s value, else ``$LOPT_KERNELS``, else ``"xla"``."""
    if _mode is not None:
        return _mode
    env = os.environ.get(ENV_VAR, "xla").strip().lower() or "xla"
    if env not in MODES:
        raise ValueError(f"{ENV_VAR}={env!r} is not one of {MODES}; unset it or pick one.")
    return env


def set_mode(mode: str | None) -> None:
    """Sets the mode for steps traced from now on (``None``: back to the environment).

    Example:
        >>> from lopt import kernels
        >>> kernels.set_mode("auto"); kernels.get_mode()
        'auto'
        >>> kernels.set_mode(None)
    """
    global _mode
    _mode = None if mode is None else _check(mode)


@contextlib.contextmanager
def mode_scope(mode: str) -> Iterator[None]:
    """Context manager: :func:`set_mode` inside the block, the previous mode after it."""
    global _mode
    previous, _mode = _mode, _check(mode)
    try:
        yield
    finally:
        _mode = previous


def check_option(owner: str, mode: str | None) -> None:
    """Checks a learned optimizer's ``kernel`` execution option: ``None`` or one of :data:`MODES`.

    Example:
        >>> check_option("NominalLOpt", "auto")
        >>> check_option("NominalLOpt", "fast")
        Traceback (most recent call last):
        ...
        ValueError: NominalLOpt: kernel='fast' must be None (lopt.kernels' global mode) or one of ('xla', 'auto', 'pallas', 'interpret').
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"{owner}: kernel={mode!r} must be None (lopt.kernels' global mode) or one of {MODES}.")


def resolve(supported: bool, mode: str | None = None) -> bool | None:
    """Decides for one step: ``None`` for XLA, else the ``interpret`` flag of the kernel.

    Args:
        supported: whether the architecture's config has a fused kernel.
        mode: the learned optimizer's own ``kernel`` option; ``None``: :func:`get_mode`.
    """
    mode = get_mode() if mode is None else _check(mode)
    if mode == "xla" or not supported:
        return None
    on_gpu = jax.default_backend() == "gpu"
    if mode == "auto":
        return False if on_gpu else None
    if mode == "pallas":
        return not on_gpu
    return True
