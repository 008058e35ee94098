"""Coordinatewise LSTM learned optimizer (Andrychowicz et al. 2016).

"Learning to learn by gradient descent by gradient descent" (Andrychowicz, Denil, Gomez,
Hoffman, Pfau, Schaul, Shillingford, de Freitas; NeurIPS 2016, arXiv 1606.04474). A
small LSTM, with parameters shared across coordinates, runs separately on every
parameter, each with its own hidden state.

Inputs per parameter: the gradient, preprocessed into two features (paper, appendix A)::

    (log(|g|) / P, sign(g))   if |g| >= exp(-P)
    (-1, exp(P) * g)          otherwise,              with P = 10.

Output per parameter: the update ``output_scale * (W h + b)`` read from the last layer's
hidden state ``h``.

Cost per parameter (default: 2 layers of 20 units): state ``h`` and ``c`` for each layer,
80 float32 (320 bytes); about 10.1 kFLOPs (layer 1: 8x(2+20)x20... see
:meth:`LSTMLOpt.flops_per_param`). This is by far the heaviest architecture per
parameter; it is the historical baseline.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import LSTMLOpt
    >>> lopt_ = LSTMLOpt()
    >>> opt = lopt_.optimizer(lopt_.init(jax.random.key(0)))
    >>> params = {"w": jnp.ones((4, 3))}
    >>> state = opt.init(params)
    >>> [h.shape for h in state.h]
    [(12, 20), (12, 20)]
    >>> updates, state = opt.update(params, state)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.learned import base, nn

__all__ = ["LSTMLOpt", "LSTMLOptState", "preprocess_gradient"]

_f32 = jnp.float32


def preprocess_gradient(g: jax.Array, p: float = 10.0) -> jax.Array:
    """The log-magnitude / sign preprocessing of Andrychowicz et al., ``[..., 2]``.

    Gradient-safe at ``g = 0`` (no infinite intermediate derivatives).

    Example:
        >>> import jax.numpy as jnp
        >>> preprocess_gradient(jnp.asarray([1.0, 0.0])).tolist()
        [[0.0, 1.0], [-1.0, 0.0]]
    """
    g = g.astype(_f32)
    big = jnp.abs(g) >= math.exp(-p)
    log_mag = jnp.log(jnp.maximum(jnp.abs(g), math.exp(-p))) / p
    first = jnp.where(big, log_mag, -1.0)
    second = jnp.where(big, jnp.sign(g), math.exp(p) * g)
    return jnp.stack([first, second], axis=-1)


class LSTMLOptState(NamedTuple):
    """State of :class:`LSTMLOpt`: per layer, the LSTM state of every coordinate.

    ``h`` and ``c`` are tuples with one ``[n, hidden]`` array per layer, ``n`` the total
    number of parameters (coordinates ordered as the flattened leaves of the params).
    """

    count: jax.Array
    h: Any
    c: Any


@dataclasses.dataclass(frozen=True)
class LSTMLOpt(base.LearnedOptimizer):
    """Coordinatewise multi-layer LSTM on preprocessed gradients.

    Attributes:
        hidden_size: LSTM width (paper: 20).
        num_layers: stacked LSTM layers (paper: 2).
        preprocess_p: the ``P`` of the gradient preprocessing (paper: 10).
        output_scale: multiplier on the output (paper: 0.1).

    Example:
        >>> LSTMLOpt().state_bytes_per_param()
        320
    """

    name: ClassVar[str] = "lstm"

    hidden_size: int = 20
    num_layers: int = 2
    preprocess_p: float = 10.0
    output_scale: float = 0.1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        base.check_positive_int(owner, "hidden_size", self.hidden_size)
        base.check_positive_int(owner, "num_layers", self.num_layers)
        base.check_positive(owner, "preprocess_p", self.preprocess_p)
        base.check_positive(owner, "output_scale", self.output_scale)

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update."""
        h = self.hidden_size
        flops = 10  # preprocessing
        in_size = 2
        for _ in range(self.num_layers):
            flops += 2 * (in_size + h) * 4 * h + 4 * h  # gate matmuls + bias
            flops += 4 * h * 4  # sigmoids/tanh (counted ~4 each) and cell update
            in_size = h
        return flops + 2 * h + 2

    def state_bytes_per_param(self) -> int:
        """Bytes of optimizer state per parameter."""
        return 4 * 2 * self.num_layers * self.hidden_size

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Samples theta: ``{"lstm0": {wx, wh, b}, ..., "out": {w, b}}``."""
        keys = jax.random.split(key, self.num_layers + 1)
        theta = {}
        in_size = 2
        for i in range(self.num_layers):
            theta[f"lstm{i}"] = nn.lstm_init(keys[i], in_size, self.hidden_size)
            in_size = self.hidden_size
        theta["out"] = nn.dense_init(keys[-1], self.hidden_size, 1)
        return theta

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        del num_steps
        layers, hidden = self.num_layers, self.hidden_size

        def init(params):
            n = sum(int(np.prod(jnp.shape(p))) for p in jax.tree.leaves(params))
            # Separate buffers for h and c: the state may be donated to a jitted step.
            h = tuple(jnp.zeros((n, hidden), _f32) for _ in range(layers))
            c = tuple(jnp.zeros((n, hidden), _f32) for _ in range(layers))
            return LSTMLOptState(jnp.zeros((), jnp.int32), h, c)

        def update(grads, state, params, loss, valid_loss):
            del params, loss, valid_loss
            flat_g, treedef = jax.tree.flatten(grads)
            n = sum(g.size for g in flat_g)
            if state.h[0].shape[0] != n:
                raise ValueError(
                    f"`lstm` state holds {state.h[0].shape[0]} parameters but the grads have {n}; "
                    "create the state with `opt.init(params)` for these params."
                )
            if n == 0:
                return grads, LSTMLOptState(state.count + 1, state.h, state.c)
            # All coordinates of all tensors run through one LSTM.
            rows = [g.astype(_f32).reshape(-1) for g in flat_g]
            x = preprocess_gradient(nn.concat_rows(rows), self.preprocess_p)
            hs, cs = [], []
            for i in range(layers):
                cell_state = nn.LSTMState(state.h[i], state.c[i])
                x, new = nn.lstm_apply(theta[f"lstm{i}"], x, cell_state)
                hs.append(new.h)
                cs.append(new.c)
            out = nn.dense_apply(theta["out"], x)[:, 0] * self.output_scale
            updates = treedef.unflatten(
                [u.reshape(g.shape) for u, g in zip(nn.split_rows(out, rows), flat_g)]
            )
            return updates, LSTMLOptState(state.count + 1, tuple(hs), tuple(cs))

        return base.Transform(init, update)
