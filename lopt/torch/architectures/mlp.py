"""PyTorch port of ``mlp`` (:class:`lopt.learned.MLPLOpt`, Metz et al. 2019's per-parameter MLP).

Per step, for the tensors of one device, in two passes over chunks of rows
(:class:`lopt.torch.chunks.Plan`; cache-sized on the CPU, so the ``[features, rows]`` and
``[hidden, rows]`` temporaries stay in cache):

1. the momenta of the gradient at each decay, updated in place, and each tensor's mean
   square of every feature ``[g, p, m_1..m_k]`` (accumulated chunk by chunk);
2. the features divided by their tensor's root mean square, one MLP (time features folded
   into the first layer's bias) giving a direction ``d`` and log-magnitude ``s``, and the
   update ``-d * exp(s * exp_mult) * step_mult``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from lopt.learned import features as F
from lopt.torch import chunks, ops
from lopt.torch.architectures import mlp_rows
from lopt.torch.architectures.base import Port

__all__ = ["MLPPort"]

_f32 = torch.float32


class MLPPort(Port):
    """The ``mlp`` architecture on PyTorch tensors (state: ``momentum`` of ``(*p.shape, k)``).

    With ``state_dtype="bfloat16"`` the momenta are stored in bfloat16: both passes widen them and
    update them in float32 (the features read the float32 momenta, as in JAX), and the second
    pass stores them rounded stochastically with the bits the JAX step uses.
    """

    name: ClassVar[str] = "mlp"
    rows_forms = (mlp_rows.rows_eager, mlp_rows.rows_eager)
    bfloat16_state: ClassVar[bool] = True

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        k = len(self.arch.decays)
        return {"momentum": torch.zeros((*param.shape, k), dtype=self.state_dtype, device=param.device)}

    def update(self, params, grads, states, count, loss, num_steps, positions=None):
        del loss
        device = params[0].device
        arch = self.arch
        k = len(arch.decays)
        shapes = [tuple(p.shape) for p in params]
        sizes = [p.numel() for p in params]
        decays = torch.tensor(arch.decays, dtype=_f32, device=device)
        net = self.theta(device)["mlp"]

        ctx = [ops.tanh_time_embedding(count, arch.time_scales)]
        if arch.fraction_features:
            fraction = torch.tensor(float(count), dtype=_f32) / float(num_steps)
            ctx.append(ops.fraction_embedding(fraction, F.FRACTION_POINTS))
        context = torch.cat(ctx).to(device)
        n_x = 2 + k
        layers = [(net["w0"][:n_x].t().contiguous(), net["b0"] + context @ net["w0"][n_x:])]
        layers += [(net[f"w{i}"].t().contiguous(), net[f"b{i}"]) for i in range(1, len(net) // 2)]

        g_rows = [g.reshape(-1) for g in grads]
        p_rows = [p.detach().reshape(-1) for p in params]
        m_rows = [s["momentum"].view(-1, k) for s in states]
        floats_per_row = 2 * arch.hidden_size + 3 * n_x
        plan = self.plan(sizes, device, chunks.chunk_rows(floats_per_row, device))

        rounded = self.state_dtype != _f32
        if rounded:
            salts = torch.tensor(positions if positions is not None else range(len(params)),
                                 dtype=torch.int64, device=device)

        # Pass 1: momenta (in place for float32 state), and each tensor's sum of squares of each feature.
        sums = torch.zeros((len(sizes), n_x), dtype=_f32, device=device)
        for i in range(len(plan.chunks)):
            m = plan.take(m_rows, i)
            x = mlp_rows.features(plan.take(g_rows, i), plan.take(p_rows, i), m.to(_f32) if rounded else m, decays)
            if not rounded:  # bfloat16 state: pass 2 updates the momenta again and stores them rounded
                plan.put(m_rows, i, m)
            plan.add_per_tensor(sums, i, x.square())
        counts = torch.tensor([max(n, 1) for n in sizes], dtype=_f32, device=device)
        scales = torch.rsqrt(1e-5 + sums / counts[:, None])

        # Pass 2: normalised features, the network, the update.
        rows = self._compiled or mlp_rows.rows_eager
        consts = mlp_rows.Consts(arch.exp_mult, arch.step_mult)
        out = torch.empty(plan.total, dtype=_f32, device=device)
        for i, start in enumerate(plan.starts):
            g, p, m = plan.take(g_rows, i), plan.take(p_rows, i), plan.take(m_rows, i)
            if rounded:  # the same float32 momenta as pass 1's
                m = m.to(_f32)
                mlp_rows.features(g, p, m, decays)
            rows(g, p, m, plan.per_row(scales, i), out[start : start + g.shape[0]], layers, consts)
            if rounded:
                plan.put(m_rows, i, self.round_chunk(m, None, plan, i, count + 1, salts)[0])
        return ops.split_as(out, shapes)
