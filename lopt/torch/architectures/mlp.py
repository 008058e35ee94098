"""PyTorch port of ``mlp`` (:class:`lopt.learned.MLPLOpt`, Metz et al. 2019's per-parameter MLP).

Per step, for all tensors at once: the momenta of the gradient at each decay, the features
``[g, p, m_1..m_k]`` of every parameter in one ``[N, 2 + k]`` buffer, each feature divided by
its root mean square within its tensor, then one MLP over all rows (time features folded
into the first layer's bias) giving a direction ``d`` and log-magnitude ``s``; the update is
``-d * exp(s * exp_mult) * step_mult``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from lopt.learned import features as F
from lopt.torch import ops
from lopt.torch.architectures.base import Port

__all__ = ["MLPPort"]

_f32 = torch.float32


class MLPPort(Port):
    """The ``mlp`` architecture on PyTorch tensors (state: ``momentum`` of ``(*p.shape, k)``)."""

    name: ClassVar[str] = "mlp"

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        k = len(self.arch.decays)
        return {"momentum": torch.zeros((*param.shape, k), dtype=_f32, device=param.device)}

    def update(self, params, grads, states, count, loss, num_steps):
        del loss
        device = params[0].device
        arch = self.arch
        k = len(arch.decays)
        shapes = [tuple(p.shape) for p in params]
        sizes = [p.numel() for p in params]

        decays = torch.tensor(arch.decays, dtype=_f32, device=device)
        g = ops.flat_cat(grads)
        m = ops.flat_cat([s["momentum"] for s in states], width=k)
        m = decays * m + (1.0 - decays) * g[:, None]
        torch._foreach_copy_([s["momentum"] for s in states], ops.split_as(m, shapes))

        x = torch.empty((g.shape[0], 2 + k), dtype=_f32, device=device)
        x[:, 0] = g
        x[:, 1] = ops.flat_cat(params)
        x[:, 2:] = m
        ops.normalize_per_tensor_(x, sizes)

        ctx = [ops.tanh_time_embedding(count, arch.time_scales)]
        if arch.fraction_features:
            fraction = torch.tensor(float(count), dtype=_f32) / float(num_steps)
            ctx.append(ops.fraction_embedding(fraction, F.FRACTION_POINTS))
        context = torch.cat(ctx).to(device)

        out = ops.mlp_apply(self.theta(device)["mlp"], x, context=context)
        step = out[:, 0] * torch.exp(out[:, 1] * arch.exp_mult) * arch.step_mult
        return ops.split_as(step.neg_(), shapes)
