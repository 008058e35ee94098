"""The anchored direction of :class:`lopt.learned.NominalLOpt` as a table lookup.

With ``anchored_direction=True`` the step subtracts from the network's direction the direction
the same network gives at zero gradient inputs, i.e. with the parameter input ``x = clip(p / rms(p))``
alone. For one tensor at one step (a fixed theta, first-layer bias and context) that anchor is a
function of the scalar ``x`` only, and a ReLU network of one input is piecewise linear:

    f(x) = w2 . relu(w1^T relu(a x + b) + b1) + b2

has a kink where a first-layer unit turns on (``x = -b_j / a_j``, ``h`` of them) and, between two
of those, at most one kink per second-layer unit (its pre-activation is linear there), so at most
``h + (h + 1) h`` kinks and ``(h + 1)**2`` linear pieces (81 for the 6-8-8-2 network).
:func:`table` finds them (per tensor, in XLA, a few hundred floats of work) and each piece's
slope and intercept from the units active on it; the kernel (:func:`lookup`) finds ``x``'s piece
by a branchless binary search over the sorted kinks (7 probes for 81 pieces in a table of 128)
and returns ``intercept + slope * x``. Both compute the same function; they differ by float32
rounding. The kernel uses it with ``KernelConfig(anchor="table")``: the folded pretrained step
then compiles to 366 instructions per parameter instead of 406 at 512 x 4, but on an H100 it ran
1.4% *slower* than the second network pass in two runs (3.500 and 3.502 ms against 3.444 and
3.454, stop 55; the 7 dependent probes are L1 round trips), so ``"network"`` is the default.

Example:
    >>> import jax, jax.numpy as jnp
    >>> k = jax.random.split(jax.random.key(0), 5)
    >>> a, b, b1 = (jax.random.normal(x, (8,)) for x in k[:3])
    >>> w1, w2 = jax.random.normal(k[3], (8, 8)), jax.random.normal(k[4], (8,))
    >>> t = table(a, b, w1, b1, w2, jnp.float32(0.5), clip=10.0)
    >>> x = jnp.linspace(-10.0, 10.0, 1001)
    >>> direct = jax.nn.relu(jax.nn.relu(x[:, None] * a + b) @ w1 + b1) @ w2 + 0.5
    >>> bool(jnp.allclose(lookup(t.__getitem__, x, table_size(8)), direct, atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["lookup", "table", "table_size"]

_f32 = jnp.float32


def table_size(hidden: int) -> int:
    """Entries per column of the table: the smallest power of two above the ``(hidden + 1)**2``
    pieces (a binary search over a power of two needs no bounds checks).

    Example:
        >>> table_size(8), table_size(32)
        (128, 2048)
    """
    pieces = (hidden + 1) ** 2
    return 1 << pieces.bit_length()


def _second_layer(a, b, w1, b1, x):
    """Slope and intercept in ``x`` of each second-layer pre-activation, ``[points, hidden]``, on
    the piece around each point of ``x`` (the first-layer units on there). Summed as elementwise
    products in float32, not as a dot, which XLA may run in TF32 on a GPU."""
    on0 = (x[:, None] * a + b > 0).astype(_f32)
    return (jnp.sum((on0 * a)[:, :, None] * w1, axis=1),
            jnp.sum((on0 * b)[:, :, None] * w1, axis=1) + b1)


def _pieces(a, b, w1, b1, w2, b2, x):
    """Slope and intercept of ``f`` on the linear piece that contains each point of ``x``."""
    s1, c1 = _second_layer(a, b, w1, b1, x)
    on1 = (s1 * x[:, None] + c1 > 0).astype(_f32)
    return jnp.sum(on1 * s1 * w2, axis=1), jnp.sum(on1 * c1 * w2, axis=1) + b2


def table(a: jax.Array, b: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array, *,
          clip: float) -> jax.Array:
    """The anchor's lookup table: ``[kinks, slopes, intercepts]``, each :func:`table_size` long.

    Args:
        a: ``[hidden]``, the first layer's weights from the parameter input (``w0[-1]``).
        b: ``[hidden]``, the first layer's bias this step (``b0`` plus the context).
        w1: ``[hidden, hidden]``, the second layer's weights (``w1[i, j]``: unit ``i`` to ``j``).
        b1: ``[hidden]``, its bias.
        w2: ``[hidden]``, the output layer's weights to the direction (``w2[:, 0]``).
        b2: the direction's bias (a scalar).
        clip: ``x`` lies in ``[-clip, clip]``; kinks outside are dropped.

    Returns:
        A float32 vector of ``3 * table_size(hidden)``: the sorted kinks (padded with ``inf``),
        then per piece (piece ``k`` lies between kinks ``k - 1`` and ``k``) its slope, then its
        intercept.
    """
    a, b, w1, b1, w2 = (jnp.asarray(v, _f32) for v in (a, b, w1, b1, w2))
    b2 = jnp.asarray(b2, _f32)
    hidden = a.shape[0]
    size = table_size(hidden)
    inf = jnp.float32(jnp.inf)

    def inside(t):
        return jnp.where(jnp.isfinite(t) & (t > -clip) & (t < clip), t, inf)

    safe_a = jnp.where(a == 0, 1.0, a)
    first = inside(jnp.where(a == 0, inf, -b / safe_a))  # where each first-layer unit turns on
    edges = jnp.sort(jnp.concatenate([jnp.asarray([-clip], _f32), jnp.minimum(first, clip),
                                      jnp.asarray([clip], _f32)]))
    low, high = edges[:-1], edges[1:]  # hidden + 1 intervals with no first-layer kink inside
    s1, c1 = _second_layer(a, b, w1, b1, (low + high) / 2)
    root = -c1 / jnp.where(s1 == 0, 1.0, s1)
    second = jnp.where((s1 != 0) & (root > low[:, None]) & (root < high[:, None]), root, inf)
    kinks = jnp.sort(jnp.concatenate([first, second.ravel()]))
    kinks = jnp.concatenate([kinks, jnp.full((size - kinks.shape[0],), inf, _f32)])
    below = jnp.minimum(jnp.concatenate([jnp.asarray([-clip], _f32), kinks[:-1]]), clip)
    middle = (below + jnp.minimum(kinks, clip)) / 2  # a point inside each piece (clip past the last)
    slopes, intercepts = _pieces(a, b, w1, b1, w2, b2, middle)
    return jnp.concatenate([kinks, slopes, intercepts])


def lookup(read: Callable[[jax.Array], jax.Array], x: jax.Array, size: int) -> jax.Array:
    """``f(x)`` from a :func:`table` read through ``read(indices)`` (a kernel's ref gather, or
    indexing an array): a branchless binary search for the number of kinks ``<= x``, then the
    piece's ``intercept + slope * x``. ``NaN`` in ``x`` gives ``NaN``."""
    piece = jnp.zeros(x.shape, jnp.int32)
    step = size // 2
    while step:
        piece = jnp.where(read(piece + (step - 1)) <= x, piece + step, piece)
        step //= 2
    return read(piece + 2 * size) + read(piece + size) * x
