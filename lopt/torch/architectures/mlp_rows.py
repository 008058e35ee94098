"""The per-parameter part of ``mlp``'s step on one chunk of rows.

:func:`features` updates a chunk's momenta in place and returns its raw features
``[2 + k, n]`` (``g``, ``p``, the momenta); :func:`rows_eager` normalises them with each
tensor's scale, runs the network as ``addmm`` on ``[hidden, n]`` activations and writes the
update. The arithmetic follows :class:`lopt.learned.MLPLOpt` (results differ from JAX's only
by float32 rounding). ``torch.compile`` compiles :func:`rows_eager` as it is: the network's
32-wide layers stay matrix multiplications, the elementwise work around them fuses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Consts", "features", "rows_eager"]

_f32 = torch.float32


class Consts(NamedTuple):
    """Python-float constants of one optimizer."""

    exp_mult: float
    step_mult: float


def features(g, p, m, decays) -> torch.Tensor:
    """Updates ``m`` ``[n, k]`` in place (``d * m + (1 - d) * g``); returns ``[2 + k, n]``."""
    g = g.to(_f32)
    m.mul_(decays).add_(g[:, None] * (1.0 - decays))
    return torch.cat([g[None], p.to(_f32)[None], m.t()], dim=0)


def rows_eager(g, p, m, scale, out, layers, c: Consts) -> None:
    """One chunk: features times ``scale`` (``[1 or n, 2 + k]``), the network, the update.

    Args:
        g, p: ``[n]`` gradient and parameter rows; ``m`` ``[n, k]`` updated momenta.
        scale: per-row feature scales (each tensor's ``rsqrt(1e-5 + mean square)``).
        out: ``[n]`` float32 destination of the update.
        layers: ``[(w_t [out, in], bias [out]), ...]``; the first bias carries the context.
        c: the output multipliers.
    """
    x = torch.cat([g.to(_f32)[None], p.to(_f32)[None], m.t()], dim=0) * scale.t()
    h = x
    for i, (wt, b) in enumerate(layers):
        h = torch.addmm(b[:, None], wt, h)
        if i < len(layers) - 1:
            h = h.relu_()
    out.copy_(-(h[0] * torch.exp(h[1] * c.exp_mult) * c.step_mult))
