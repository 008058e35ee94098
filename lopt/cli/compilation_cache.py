"""The persistent XLA compilation cache the command line turns on for long jobs.

``lopt train`` and ``lopt eval`` compile large programs (a mixture run one per structure, an
evaluation one per task and optimizer); JAX can keep the compiled executables on disk so that a
resumed, repeated or continued run loads them instead of compiling again. The cache lives in
``$XDG_CACHE_HOME/lopt/jax-compilation-cache`` (default ``~/.cache/lopt/...``); set
``LOPT_COMPILATION_CACHE=0`` to turn it off, or point ``jax_compilation_cache_dir`` elsewhere
first (an explicit setting is kept). JAX writes and reads these entries itself; they hold no
Python objects.

Example:
    >>> import jax
    >>> from lopt.cli.compilation_cache import enable_compilation_cache
    >>> _ = enable_compilation_cache()  # returns the folder used, or None when left off
"""

from __future__ import annotations

import os

__all__ = ["CACHE_ENV", "enable_compilation_cache"]

#: Set to ``0`` to keep the command line from caching compiled programs on disk.
CACHE_ENV = "LOPT_COMPILATION_CACHE"


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache unless it is set already or disabled.

    Programs that compile in under a second are not stored (tiny helpers would only add files).

    Returns:
        The cache folder in use, or ``None`` when ``LOPT_COMPILATION_CACHE=0``.
    """
    import jax

    if os.environ.get(CACHE_ENV) == "0":
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "lopt", "jax-compilation-cache")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return folder
