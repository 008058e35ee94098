"""PyTorch port of ``nominal`` (:class:`lopt.learned.NominalLOpt`, lopt's pretrained architecture).

Adam's bias-corrected direction plus a small per-parameter MLP correction, a learned
log-learning-rate schedule over the fraction of training, and learned per-tensor multipliers.
Per step, for all tensors at once:

1. accumulators: three momenta (``b1`` and the two extra decays), Adam's second moment, and
   Adafactor row/column second moments (one per tensor of rank >= 2; a full accumulator for
   vectors and scalars);
2. six clipped, scale-free inputs per parameter in one ``[N, 6]`` buffer;
3. the network in row chunks, each row's first-layer bias carrying its tensor's context
   (fraction-of-training embedding, rank, size, fan-in), and the update
   ``-(lr * mult) * clip(m_hat + d) * exp(clip(s))``.

The per-tensor quantities (context inputs, parameter RMS, step multiplier) form one small
``[T, 5]`` table repeated over each chunk's rows; the tensor context enters the first layer
as three extra input columns, so no ``[N, hidden]`` buffer outlives a chunk.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import ClassVar

import torch

from lopt.learned import features as F
from lopt.learned import nominal as jax_nominal
from lopt.torch import ops
from lopt.torch.architectures.base import Port

__all__ = ["NominalPort"]

_f32 = torch.float32


def _fan_in(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1]) if len(shape) >= 2 else 1


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``jnp.interp`` for a scalar ``x`` inside ``[xp[0], xp[-1]]`` (same arithmetic)."""
    i = torch.clamp(torch.searchsorted(xp, x.reshape(1), right=True), 1, xp.numel() - 1)[0]
    return fp[i - 1] + ((x - xp[i - 1]) / (xp[i] - xp[i - 1])) * (fp[i] - fp[i - 1])


def _safe_rsqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt(torch.clamp_min(x, 1e-9))


def _factored_step(
    g: torch.Tensor, state: dict[str, torch.Tensor], d: torch.Tensor
) -> torch.Tensor:
    """``lopt.learned.features.factored_update`` for one tensor, one decay, in place.

    Returns the factored-normalised gradient, flat ``[numel]``.
    """
    g2 = g.square().unsqueeze(-1) + 1e-30
    dims = F.factored_dims(tuple(g.shape))
    if dims is None:
        full = state["factored_full"]
        full.copy_(d * full + (1.0 - d) * g2)
        return (g.unsqueeze(-1) * _safe_rsqrt(full)).reshape(-1)
    d1, d0 = dims
    row, col = state["factored_row"], state["factored_col"]
    row.copy_(d * row + (1.0 - d) * g2.mean(dim=d0))
    col.copy_(d * col + (1.0 - d) * g2.mean(dim=d1))
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_factor = _safe_rsqrt(row / (row.mean(dim=reduced_d1, keepdim=True) + 1e-9))
    scale = row_factor.unsqueeze(d0) * _safe_rsqrt(col).unsqueeze(d1)
    return (g.unsqueeze(-1) * scale).reshape(-1)


class NominalPort(Port):
    """The ``nominal`` architecture on PyTorch tensors.

    State per parameter: ``momentum`` ``(*p.shape, 3)``, ``rms`` ``p.shape``, and either
    ``factored_row``/``factored_col`` (rank >= 2) or ``factored_full`` (rank < 2), all float32.
    """

    name: ClassVar[str] = "nominal"

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        shape, dev = tuple(param.shape), param.device
        state = {
            "momentum": torch.zeros((*shape, len(self.arch.decays)), dtype=_f32, device=dev),
            "rms": torch.zeros(shape, dtype=_f32, device=dev),
        }
        dims = F.factored_dims(shape)
        if dims is None:
            state["factored_full"] = torch.zeros((*shape, 1), dtype=_f32, device=dev)
        else:
            d1, d0 = dims
            row = tuple(s for i, s in enumerate(shape) if i != d0)
            col = tuple(s for i, s in enumerate(shape) if i != d1)
            state["factored_row"] = torch.zeros((*row, 1), dtype=_f32, device=dev)
            state["factored_col"] = torch.zeros((*col, 1), dtype=_f32, device=dev)
        return state

    def _scalars(self, count: int, num_steps: int | None) -> dict[str, torch.Tensor]:
        """Step-dependent scalars on the CPU: fraction, lr, bias corrections, context."""
        arch, th = self.arch, self.theta(torch.device("cpu"))
        t = torch.tensor(float(count + 1), dtype=_f32)
        if num_steps is None:
            fraction = torch.tensor(arch.unknown_horizon_fraction, dtype=_f32)
        else:
            fraction = torch.clamp((t - 1.0) / float(num_steps), 0.0, 1.0)
        knots = torch.linspace(0.0, 1.0, arch.schedule_knots, dtype=_f32)
        tau = torch.clamp(fraction, 0.0, 1.0)
        lr = torch.exp(th["log_lr"] + _interp(tau, knots, th["schedule"]))
        decays = torch.tensor(arch.decays, dtype=_f32)
        return {
            "lr": lr,
            "decays": decays,
            "m_correction": 1.0 / (1.0 - decays**t),
            "v_correction": 1.0 / (1.0 - torch.tensor(arch.b2, dtype=_f32) ** t),
            "time_context": ops.fraction_embedding(fraction, F.FRACTION_POINTS),
        }

    def _tensor_table(self, shapes, scalars) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-tensor inputs on the CPU.

        Returns:
            ``(tensor_context [T, 3], minus_step [T], shared_bias [hidden])``: each tensor's
            context inputs (rank < 2, log size, log fan-in), ``-(lr * mult)``, and the
            first-layer bias plus the time context's contribution (the same for all rows).
        """
        th = self.theta(torch.device("cpu"))
        net = th["network"]
        ctx = [
            [
                float(len(s) < 2),
                math.log10(max(math.prod(s), 1)) / 4.0,
                math.log10(_fan_in(s)) / 4.0,
            ]
            for s in shapes
        ]
        n_time = scalars["time_context"].numel()
        shared_bias = net["b0"] + scalars["time_context"] @ net["w_context"][:n_time]
        mults = []
        for s in shapes:
            if len(s) < 2:
                mults.append(torch.exp(th["log_tensor_mult"][0]))
            else:
                log_fan = math.log(_fan_in(s) / jax_nominal.FAN_IN_REFERENCE)
                mults.append(torch.exp(th["log_tensor_mult"][1] - th["mup_exponent"] * log_fan))
        minus_step = -(scalars["lr"] * torch.stack(mults))
        return torch.tensor(ctx, dtype=_f32), minus_step, shared_bias

    def update(self, params, grads, states, count, loss, num_steps):
        del loss
        arch = self.arch
        device = params[0].device
        net = self.theta(device)["network"]
        shapes = [tuple(p.shape) for p in params]
        sizes = [p.numel() for p in params]
        k = len(arch.decays)
        scalars = self._scalars(count, num_steps)
        on_dev = {key: v.to(device) for key, v in scalars.items()}

        g = ops.flat_cat(grads)
        p = ops.flat_cat(params)
        decays = on_dev["decays"]
        m = ops.flat_cat([s["momentum"] for s in states], width=k)
        m = decays * m + (1.0 - decays) * g[:, None]
        v = ops.flat_cat([s["rms"] for s in states])
        v = arch.b2 * v + (1 - arch.b2) * g.square()
        torch._foreach_copy_([s["momentum"] for s in states], ops.split_as(m, shapes))
        torch._foreach_copy_([s["rms"] for s in states], ops.split_as(v, shapes))
        fd = torch.tensor([arch.factored_decay], dtype=_f32, device=device)
        fac_g = torch.cat([_factored_step(gi.to(_f32), s, fd) for gi, s in zip(grads, states)])

        p_rms = torch.stack(
            [
                piece.square().mean().sqrt() if piece.numel() else piece.new_zeros(())
                for piece in p.split(sizes)
            ]
        )
        tensor_context, minus_step, shared_bias = self._tensor_table(shapes, scalars)
        n_ctx = tensor_context.shape[1]
        # Per tensor: [context inputs..., parameter RMS, -(lr * mult)], repeated over its rows.
        table = torch.cat(
            [tensor_context.to(device), p_rms[:, None], minus_step.to(device)[:, None]], dim=1
        )
        # The tensor context enters the first layer as extra input columns (its weights are
        # the context rows of w_context), so no per-row [N, hidden] bias is materialised.
        n_time = scalars["time_context"].numel()
        w_in = torch.cat([net["w0"], net["w_context"][n_time:]], dim=0)
        shared_bias = shared_bias.to(device)
        n_in = net["w0"].shape[0]

        clip = arch.input_clip
        out = torch.empty_like(g)
        ends = list(itertools.accumulate(sizes))
        step_rows = ops.chunk_rows(3 * arch.hidden_size + 2 * (n_in + n_ctx) + 16)
        for start in range(0, g.shape[0], step_rows):
            stop = min(start + step_rows, g.shape[0])
            sl = slice(start, stop)
            first = bisect.bisect_right(ends, start)
            last = bisect.bisect_left(ends, stop)
            counts = [
                min(ends[i], stop) - max(ends[i] - sizes[i], start) for i in range(first, last + 1)
            ]
            tab = table[first : last + 1].repeat_interleave(
                torch.tensor(counts, device=device), dim=0, output_size=stop - start
            )
            precond = 1.0 / (torch.sqrt(v[sl] * on_dev["v_correction"]) + arch.eps)
            moments = m[sl] * on_dev["m_correction"] * precond[:, None]
            x = torch.empty((stop - start, n_in + n_ctx), dtype=_f32, device=device)
            x[:, 0] = g[sl] * precond
            x[:, 1 : 1 + k] = moments
            x[:, 1 + k] = fac_g[sl]
            x[:, 2 + k] = p[sl] / (tab[:, n_ctx] + 1e-8)
            x[:, :n_in].clamp_(-clip, clip)
            x[:, n_in:] = tab[:, :n_ctx]
            h = torch.relu_(torch.addmm(shared_bias, x, w_in))
            h = torch.relu_(torch.addmm(net["b1"], h, net["w1"]))
            o = torch.addmm(net["b2"], h, net["w2"])
            combined = torch.clamp(moments[:, 0] + o[:, 0], -arch.update_clip, arch.update_clip)
            scale = torch.exp(torch.clamp(o[:, 1], -4.0, 4.0))
            out[sl] = tab[:, n_ctx + 1] * combined * scale
        return ops.split_as(out, shapes)
