"""Host values onto the device without compiling anything.

Outside a trace, ``jnp.asarray(numpy_array)`` (and ``jnp.array``) lifts the value with
``lax.stage``, which JAX compiles into an identity program once per shape and dtype. A mixture's
set-up puts a few hundred host arrays of distinct shapes on the device (datasets, task settings,
stacked pools): 136 such programs for the ``taskset`` preset's 16 structures x 8 configs (counted
on the CPU with ``jax_log_compiles``), each a separate XLA compile. ``jax.device_put``
copies the same bytes without a program; :func:`to_device` is that, with ``jnp.asarray``'s dtype
rules (64-bit values become 32-bit unless x64 is on).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["to_device"]


def to_device(value: Any, dtype: Any = None) -> jax.Array:
    """``value`` as a ``jax.Array`` on the default device, like ``jnp.asarray`` but compiling nothing.

    Args:
        value: a numpy array, a Python or numpy scalar, a nested list of numbers, or a
            ``jax.Array`` (returned as it is when ``dtype`` is ``None`` or already its dtype).
        dtype: the dtype to convert to first (on the host), or ``None`` to keep the value's.

    Returns:
        A ``jax.Array`` on the default device (uncommitted, as ``jnp.asarray`` gives). Unlike
        ``jnp.asarray``, a Python scalar gives a strongly typed array.

    Raises:
        TypeError: if ``value`` is not array-like (e.g. a string or a dict).

    Example:
        >>> import numpy as np
        >>> from lopt.host_transfer import to_device
        >>> x = to_device(np.arange(3, dtype=np.float64))
        >>> x.dtype, x.tolist()
        (dtype('float32'), [0.0, 1.0, 2.0])
        >>> to_device([1, 2], np.float32).dtype
        dtype('float32')
    """
    if isinstance(value, jax.Array):
        if dtype is None or value.dtype == jax.dtypes.canonicalize_dtype(dtype):
            return value
        value = np.asarray(value)
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise TypeError(f"to_device: expected an array-like value, got {type(value).__name__}; "
                        "pass a numpy array, a number or a nested list of numbers.")
    array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if array.dtype == object:
        raise TypeError(f"to_device: {type(value).__name__} does not convert to a numeric array; "
                        "pass a numpy array, a number or a nested list of numbers.")
    return jax.device_put(array)
