"""A process-wide gate on how many threads trace JAX programs at once.

A mixture run's set-up compiles one program per structure, and fits each structure's
normalisers with another, in background threads. Tracing and lowering a program is Python work
and holds the GIL; XLA's compilation that follows releases it. With 32 threads tracing at once
the tracers only take turns (and the main thread, building tasks, waits behind all of them): a
cold H200 set-up of 16 structures lowered each program in 41-95 s, against 13-32 s with the
16 fits not tracing beside them. Through this gate at most ``$LOPT_TRACE_THREADS`` threads
(default 2) trace at a time, in the order they asked, and each program starts compiling as soon
as its own trace is done, while the next one traces.

:func:`compile_gated` traces, lowers (through the gate) and compiles a jitted function for its
arguments, and keeps the compiled program per argument signature, as ``jax.jit`` does for calls.

Example:
    >>> import functools, jax, jax.numpy as jnp
    >>> from lopt.meta.trace_gate import compile_gated
    >>> @functools.partial(jax.jit, static_argnames=("power",))
    ... def f(x, power):
    ...     return x ** power
    >>> program = compile_gated(f, jnp.arange(3.0), power=2)
    >>> program(jnp.arange(3.0)).tolist()
    [0.0, 1.0, 4.0]
    >>> compile_gated(f, jnp.ones(3), power=2) is program  # same shapes, same program
    True
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import jax

from lopt.env_settings import parse_count

__all__ = ["THREADS_ENV", "compile_gated", "trace_threads", "tracing"]

THREADS_ENV = "LOPT_TRACE_THREADS"
_DEFAULT_THREADS = 2
_MAX_PROGRAMS = 64  # compiled programs kept by compile_gated (oldest dropped first)

_gate_lock = threading.Lock()
_gate: tuple[int, threading.BoundedSemaphore] | None = None
_programs: collections.OrderedDict = collections.OrderedDict()
_programs_lock = threading.Lock()


def trace_threads() -> int:
    """Threads that may trace at once: ``$LOPT_TRACE_THREADS`` (a positive integer), else 2.

    Raises:
        ValueError: the variable is set to anything but a positive integer.
    """
    setting = os.environ.get(THREADS_ENV, "").strip()
    if not setting:
        return _DEFAULT_THREADS
    return parse_count(THREADS_ENV, setting, minimum=1, expected="a positive integer (threads tracing JAX programs "
                       f"at once; unset: {_DEFAULT_THREADS})")


def _semaphore() -> threading.BoundedSemaphore:
    """The gate for the current setting (a changed setting takes effect for later tracers)."""
    global _gate
    threads = trace_threads()
    with _gate_lock:
        if _gate is None or _gate[0] != threads:
            _gate = (threads, threading.BoundedSemaphore(threads))
        return _gate[1]


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Holds one of the gate's places for the duration of the block (trace and lower in it)."""
    with _semaphore():
        yield


def _signature(jitted: Any, args: tuple, static: dict) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    avals = tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves)
    return id(jitted), treedef, avals, tuple(sorted(static.items()))


def compile_gated(jitted: Any, *args: Any, **static: Any) -> Any:
    """``jitted`` traced and lowered through the gate, then compiled, for ``args`` and ``static``.

    Args:
        jitted: a ``jax.jit``-wrapped function.
        *args: its dynamic arguments (arrays or pytrees of them; their shapes and dtypes pick the program).
        **static: its static arguments, by name.

    Returns:
        The compiled program: call it with ``*args`` only (static arguments are baked in).

    Raises:
        TypeError: ``jitted`` is not a jitted function.
    """
    if not hasattr(jitted, "trace"):
        raise TypeError(f"compile_gated: {jitted!r} is not a jax.jit-wrapped function; wrap it with jax.jit first.")
    key = _signature(jitted, args, static)
    with _programs_lock:
        if key in _programs:
            _programs.move_to_end(key)
            return _programs[key]
    with tracing():
        lowered = jitted.trace(*args, **static).lower()
    program = lowered.compile()  # XLA releases the GIL: other threads trace meanwhile
    with _programs_lock:
        _programs[key] = program
        while len(_programs) > _MAX_PROGRAMS:
            _programs.popitem(last=False)
    return program
