"""Tiny networks for learned optimizers: dense layers, MLPs and an LSTM cell.

Parameters are plain dicts of arrays (so they are pytrees, vmappable and checkpointable
by name); ``*_init`` functions build them from a key and ``*_apply`` functions are pure.
No flax/haiku dependency.

The MLP applies to inputs of any leading shape (``[..., features]``): this is how one
small network is applied to every parameter of a tensor at once. Inputs that are the
same for every parameter of a tensor (time features, per-tensor context) can be passed
separately as ``context``; their contribution to the first layer is computed once per
tensor instead of once per parameter, which gives exactly the same result as
concatenating them to every row.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import nn
    >>> net = nn.mlp_init(jax.random.key(0), [5, 8, 2])
    >>> x = jnp.ones((3, 4, 3))          # 3 per-parameter features
    >>> ctx = jnp.ones(2)                # 2 per-tensor features
    >>> nn.mlp_apply(net, x, context=ctx).shape
    (3, 4, 2)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "LSTMState",
    "concat_rows",
    "dense_apply",
    "dense_init",
    "lstm_apply",
    "lstm_init",
    "lstm_zero_state",
    "mlp_apply",
    "mlp_flops",
    "mlp_init",
    "mlp_sizes",
    "split_rows",
]

Array = jax.Array


def dense_init(
    key: Array, fan_in: int, fan_out: int, *, scale: float = 1.0, bias: float = 0.0
) -> dict[str, Array]:
    """Initialises one dense layer: truncated-normal weights with std ``scale/sqrt(fan_in)``.

    Args:
        key: PRNG key.
        fan_in: input width.
        fan_out: output width.
        scale: multiplier on the standard deviation of the weights.
        bias: initial value of every bias.

    Returns:
        ``{"w": [fan_in, fan_out], "b": [fan_out]}`` float32 arrays.

    Example:
        >>> import jax
        >>> dense_init(jax.random.key(0), 3, 2)["w"].shape
        (3, 2)
    """
    std = scale / max(fan_in, 1) ** 0.5
    w = std * jax.random.truncated_normal(key, -2.0, 2.0, (fan_in, fan_out), jnp.float32)
    return {"w": w, "b": jnp.full((fan_out,), bias, jnp.float32)}


def dense_apply(layer: dict[str, Array], x: Array) -> Array:
    """Applies a dense layer to ``x`` of shape ``[..., fan_in]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> dense_apply(dense_init(jax.random.key(0), 3, 2), jnp.ones(3)).shape
        (2,)
    """
    return x @ layer["w"] + layer["b"]


def mlp_init(key: Array, sizes: Sequence[int], *, final_scale: float = 1.0) -> dict[str, Array]:
    """Initialises an MLP with layer widths ``sizes`` (input width first).

    Args:
        key: PRNG key.
        sizes: ``[in, hidden..., out]``.
        final_scale: multiplier on the init std of the last layer's weights.

    Returns:
        ``{"w0", "b0", "w1", "b1", ...}``: weights ``[sizes[i], sizes[i+1]]``, biases zero.

    Example:
        >>> import jax
        >>> sorted(mlp_init(jax.random.key(0), [4, 8, 2]))
        ['b0', 'b1', 'w0', 'w1']
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes={list(sizes)} needs at least an input and an output width.")
    keys = jax.random.split(key, len(sizes) - 1)
    net = {}
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        layer = dense_init(k, a, b, scale=final_scale if i == len(sizes) - 2 else 1.0)
        net[f"w{i}"], net[f"b{i}"] = layer["w"], layer["b"]
    return net


def mlp_sizes(net: dict[str, Any]) -> list[int]:
    """Layer widths ``[in, hidden..., out]`` of an MLP built by :func:`mlp_init`."""
    n = len(net) // 2
    return [net["w0"].shape[-2]] + [net[f"w{i}"].shape[-1] for i in range(n)]


def mlp_apply(
    net: dict[str, Array],
    x: Array,
    *,
    context: Array | None = None,
    activation=jax.nn.relu,
) -> Array:
    """Applies an MLP to ``x`` of shape ``[..., n_x]``, with optional shared ``context``.

    The first layer's input is ``concat([x, broadcast(context)], -1)``; the context part
    of the product is computed once (it is the same for every row), then added as a bias.

    Args:
        net: parameters from :func:`mlp_init`, first-layer input width
            ``n_x + len(context)``.
        x: per-row inputs, ``[..., n_x]``.
        context: optional ``[n_c]`` inputs shared by all rows.
        activation: nonlinearity between layers (none after the last).

    Returns:
        ``[..., out]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = mlp_init(jax.random.key(0), [3, 4, 1])
        >>> full = mlp_apply(net, jnp.ones((2, 3)))
        >>> split = mlp_apply(net, jnp.ones((2, 2)), context=jnp.ones(1))
        >>> bool(jnp.allclose(full, split))
        True
    """
    n_layers = len(net) // 2
    w0, b0 = net["w0"], net["b0"]
    n_x = x.shape[-1]
    if context is not None:
        if n_x + context.shape[-1] != w0.shape[-2]:
            raise ValueError(
                f"MLP expects {w0.shape[-2]} inputs but got {n_x} per-row + "
                f"{context.shape[-1]} context features."
            )
        b0 = b0 + context @ w0[n_x:]
        w0 = w0[:n_x]
    h = x @ w0 + b0
    for i in range(1, n_layers):
        h = activation(h)
        h = h @ net[f"w{i}"] + net[f"b{i}"]
    return h


def mlp_flops(sizes: Sequence[int], n_context: int = 0) -> int:
    """Floating-point operations per row of :func:`mlp_apply` (multiply-add = 2).

    Args:
        sizes: layer widths ``[in, hidden..., out]`` (``in`` includes context features).
        n_context: how many inputs are per-tensor context (computed once, not per row).

    Returns:
        FLOPs per row, counting matmuls, biases and activations.

    Example:
        >>> mlp_flops([19, 32, 32, 2], n_context=11)
        2818
    """
    sizes = list(sizes)
    sizes[0] -= n_context
    flops = 0
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        flops += 2 * a * b + b  # matmul + bias
        if i < len(sizes) - 2:
            flops += b  # activation
    return flops


class LSTMState(NamedTuple):
    """Hidden and cell state of an LSTM, each ``[..., hidden]``."""

    h: Array
    c: Array


def lstm_init(key: Array, in_size: int, hidden: int) -> dict[str, Array]:
    """Initialises an LSTM cell (gate order i, g, f, o; forget-gate bias +1 at apply).

    Args:
        key: PRNG key.
        in_size: input width.
        hidden: hidden width.

    Returns:
        ``{"wx": [in, 4h], "wh": [h, 4h], "b": [4h]}``.

    Example:
        >>> import jax
        >>> lstm_init(jax.random.key(0), 3, 5)["wh"].shape
        (5, 20)
    """
    k1, k2 = jax.random.split(key)
    return {
        "wx": dense_init(k1, in_size, 4 * hidden)["w"],
        "wh": dense_init(k2, hidden, 4 * hidden)["w"],
        "b": jnp.zeros((4 * hidden,), jnp.float32),
    }


def lstm_zero_state(shape: Sequence[int], hidden: int) -> LSTMState:
    """All-zero :class:`LSTMState` of shape ``[*shape, hidden]`` (float32).

    ``h`` and ``c`` are separate buffers, so the state can be donated to a jitted step.
    """
    return LSTMState(
        h=jnp.zeros((*shape, hidden), jnp.float32), c=jnp.zeros((*shape, hidden), jnp.float32)
    )


def lstm_apply(cell: dict[str, Array], x: Array, state: LSTMState) -> tuple[Array, LSTMState]:
    """One LSTM step for inputs ``[..., in]`` and state ``[..., hidden]``.

    Returns:
        ``(h, new_state)`` where ``h`` is the output ``[..., hidden]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> cell = lstm_init(jax.random.key(0), 3, 4)
        >>> out, s = lstm_apply(cell, jnp.ones((2, 3)), lstm_zero_state((2,), 4))
        >>> out.shape
        (2, 4)
    """
    gates = x @ cell["wx"] + state.h @ cell["wh"] + cell["b"]
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, LSTMState(h=h, c=c)


def concat_rows(rows: Sequence[Array]) -> Array:
    """Concatenates ``[n_i, ...]`` arrays along the first axis (one array passes through).

    Used to run one per-parameter network over the parameters of all tensors at once
    (one kernel instead of one per tensor; XLA fuses the concatenation into the
    producer of the network's input).
    """
    return rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=0)


def split_rows(x: Array, like: Sequence[Array]) -> list[Array]:
    """Inverse of :func:`concat_rows`: splits ``x`` into pieces with ``len(like[i])`` rows.

    Example:
        >>> import jax.numpy as jnp
        >>> [p.shape for p in split_rows(jnp.arange(5), [jnp.ones(2), jnp.ones(3)])]
        [(2,), (3,)]
    """
    sizes = [r.shape[0] for r in like]
    if len(sizes) == 1:
        return [x]
    offsets = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
    return jnp.split(x, offsets, axis=0)
