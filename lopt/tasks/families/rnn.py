"""Recurrent cells (vanilla tanh, GRU, LSTM) as pure functions over a params dict.

Every cell's params are ``{"w_x": [D, G*H], "w_h": [H, G*H], "b": [G*H]}`` with ``G`` gates
(1, 3 or 4). The cell type is a static Python string (part of a task's spec). :func:`run`
projects all inputs at once and runs one ``lax.scan`` over time for the recurrence only.

Equations (``xW`` is ``x @ w_x + b`` split into gates, ``hU`` is ``h @ w_h`` likewise):

* ``vanilla``: ``h' = tanh(xW + hU)``.
* ``gru`` (gates ``r, z, n``): ``r = σ(xW_r + hU_r)``, ``z = σ(xW_z + hU_z)``,
  ``n = tanh(xW_n + r * hU_n)``, ``h' = (1 - z) * n + z * h``.
* ``lstm`` (gates ``i, f, g, o``; state ``(h, c)``): ``c' = σ(f) * c + σ(i) * tanh(g)``,
  ``h' = σ(o) * tanh(c')``; the forget-gate bias starts at 1.

Example:
    >>> import jax
    >>> params = init(jax.random.key(0), "gru", input_size=3, hidden_size=5)
    >>> hs, state = run("gru", params, jax.numpy.ones((2, 7, 3)))
    >>> hs.shape
    (2, 7, 5)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["CELLS", "check_cell", "init", "initial_state", "run", "step"]

#: The supported cell types and their number of gates.
CELLS = {"vanilla": 1, "gru": 3, "lstm": 4}

Params = dict[str, jax.Array]
State = Any  # h [B, H], or (h, c) for the LSTM


def check_cell(cell: str) -> str:
    """Returns ``cell`` if supported, else raises a ValueError listing :data:`CELLS`."""
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not a supported RNN cell; use one of {tuple(CELLS)}.")
    return cell


def init(key: jax.Array, cell: str, input_size: int, hidden_size: int, *,
         scale: jax.Array | float = 1.0) -> Params:
    """Draws cell params: LeCun-normal weights (std ``1/sqrt(fan_in)``), zero biases.

    Recurrent weights are not orthogonalised: a QR decomposition costs seconds of XLA compile
    time per hidden size on the CPU, for every sampled task.

    Args:
        key: PRNG key.
        cell: one of :data:`CELLS` (static).
        input_size: ``D``, features per time step.
        hidden_size: ``H``.
        scale: multiplies both weight matrices (may be traced: a dynamic init scale).

    Returns:
        ``{"w_x": [D, G*H], "w_h": [H, G*H], "b": [G*H]}``.
    """
    gates = CELLS[check_cell(cell)]
    kx, kh = jax.random.split(key)
    w_x = jax.random.normal(kx, (input_size, gates * hidden_size)) / math.sqrt(input_size)
    w_h = jax.random.normal(kh, (hidden_size, gates * hidden_size)) / math.sqrt(hidden_size)
    b = jnp.zeros((gates * hidden_size,))
    if cell == "lstm":
        b = b.at[hidden_size:2 * hidden_size].set(1.0)  # forget gate
    return {"w_x": w_x * scale, "w_h": w_h * scale, "b": b}


def initial_state(cell: str, batch_size: int, hidden_size: int) -> State:
    """Zeros: ``h`` of shape ``[batch_size, hidden_size]`` (and ``c`` for the LSTM)."""
    h = jnp.zeros((batch_size, hidden_size))
    return (h, h) if check_cell(cell) == "lstm" else h


def _update(cell: str, w_h: jax.Array, state: State, projected: jax.Array) -> tuple[State, jax.Array]:
    """One step given the input projection ``x @ w_x + b``; returns ``(state, h)``."""
    if cell == "vanilla":
        h = jnp.tanh(projected + state @ w_h)
        return h, h
    if cell == "gru":
        x_r, x_z, x_n = jnp.split(projected, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(state @ w_h, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * state
        return h, h
    h, c = state
    i, f, g, o = jnp.split(projected + h @ w_h, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def step(cell: str, params: Params, state: State, x: jax.Array) -> tuple[State, jax.Array]:
    """One time step on inputs ``x`` ``[B, D]``; returns the new state and ``h`` ``[B, H]``.

    Example:
        >>> import jax.numpy as jnp
        >>> params = {"w_x": jnp.eye(2), "w_h": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
        >>> _, h = step("vanilla", params, initial_state("vanilla", 1, 2), jnp.array([[0.0, 1.0]]))
        >>> [round(float(v), 4) for v in h[0]]  # tanh(1) = 0.7616
        [0.0, 0.7616]
    """
    return _update(check_cell(cell), params["w_h"], state, x @ params["w_x"] + params["b"])


def run(cell: str, params: Params, xs: jax.Array, state: State | None = None) -> tuple[jax.Array, State]:
    """Runs the cell over ``xs`` ``[B, T, D]`` in one ``lax.scan`` over time.

    Args:
        cell: one of :data:`CELLS` (static).
        params: from :func:`init`.
        xs: batch-major inputs.
        state: initial state (zeros by default).

    Returns:
        ``(hs, final_state)`` with ``hs`` of shape ``[B, T, H]``.
    """
    cell = check_cell(cell)
    hidden_size = params["w_h"].shape[0]
    if state is None:
        state = initial_state(cell, xs.shape[0], hidden_size)
    projected = jnp.swapaxes(xs @ params["w_x"] + params["b"], 0, 1)  # [T, B, G*H], one matmul
    final, hs = jax.lax.scan(lambda s, p: _update(cell, params["w_h"], s, p), state, projected)
    return jnp.swapaxes(hs, 0, 1), final
