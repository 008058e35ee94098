"""PyTorch port of ``nominal`` (:class:`lopt.learned.NominalLOpt`, lopt's pretrained architecture).

Adam's bias-corrected direction plus a small per-parameter MLP correction, a learned
log-learning-rate schedule over the fraction of training, and learned per-tensor multipliers.
Per step, for the tensors of one device:

1. whole-tensor quantities: the Adafactor row/column second moments (one per tensor of rank
   >= 2; a full accumulator for vectors and scalars) and the factored-normalised gradient,
   each tensor's parameter RMS, and a small ``[T, hidden + 2]`` table of per-tensor values
   (first-layer bias carrying the tensor's context -- fraction-of-training embedding, rank,
   size, fan-in -- ``rms(p) + 1e-8`` and ``-(lr * mult)``);
2. the rest, chunk by chunk (:class:`lopt.torch.chunks.Plan`; cache-sized on the CPU): the
   three momenta and Adam's second moment updated in place, six clipped scale-free inputs,
   the network, and the update ``-(lr * mult) * clip(m_hat + d) * exp(clip(s))``
   (:mod:`lopt.torch.architectures.nominal_rows`, eager or ``torch.compile``-d).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from lopt.learned import features as F
from lopt.learned import nominal as jax_nominal
from lopt.torch import chunks, ops
from lopt.torch import stochastic_rounding as SR
from lopt.torch.architectures import nominal_rows
from lopt.torch.architectures.base import Port
from lopt.torch.architectures.nominal_rows import keep_finite
from lopt.torch.compiled import CompiledRows

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


def _distance_sums_eager(g, p, p0, grad_sum, weight, decay: float) -> torch.Tensor:
    """Advances one tensor's float32 ``grad_sum`` (flat) in place to ``decay * s + weight * g``;
    returns ``[g . (p0 - p), sum |new s|]`` (the distance estimate's two sums, float32)."""
    g = g.to(_f32)
    dot = torch.dot(g, p0.to(_f32) - p.to(_f32))
    new = grad_sum * decay + weight * g
    total = new.abs().sum()  # of the unmasked sum, as JAX (it masks the state after the step)
    keep_finite(grad_sum, new)
    return torch.stack([dot, total])


def _distance_sums_fused(g, p, p0, grad_sum, weight, decay: float) -> torch.Tensor:
    """:func:`_distance_sums_eager` as elementwise ops and two sums, for ``torch.compile``: one
    pass reading ``g``, ``p``, ``p0`` and ``grad_sum`` and writing ``grad_sum``."""
    g = g.to(_f32)
    new = grad_sum * decay + weight * g
    keep_finite(grad_sum, new)
    return torch.stack([torch.sum(g * (p0.to(_f32) - p.to(_f32))), torch.sum(torch.abs(new))])


def _factored_full(g: torch.Tensor, full: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The factored step of a tensor of rank < 2 (a full second moment ``[*shape, 1]``, in place);
    returns the normalised gradient, flat ``[numel]``."""
    g2 = g.square().unsqueeze(-1) + 1e-30
    new = d * full + (1.0 - d) * g2
    keep_finite(full, new)  # the normalised gradient reads the new value, masked or not (as JAX)
    return (g.unsqueeze(-1) * _safe_rsqrt(new)).reshape(-1)


def _factored_pair(g: torch.Tensor, row: torch.Tensor, col: torch.Tensor, d: torch.Tensor,
                   d1: int, d0: int) -> torch.Tensor:
    """The factored step of a tensor of rank >= 2 (row and column moments over dimensions ``d0``
    and ``d1``, :func:`lopt.learned.features.factored_dims`, in place); returns the normalised
    gradient, flat ``[numel]``."""
    g2 = g.square().unsqueeze(-1) + 1e-30
    new_row = d * row + (1.0 - d) * g2.mean(dim=d0)
    new_col = d * col + (1.0 - d) * g2.mean(dim=d1)
    keep_finite(row, new_row)  # the normalised gradient reads the new values, masked or not (as JAX)
    keep_finite(col, new_col)
    row, col = new_row, new_col
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_factor = _safe_rsqrt(row / (row.mean(dim=reduced_d1, keepdim=True) + 1e-9))
    scale = row_factor.unsqueeze(d0) * _safe_rsqrt(col).unsqueeze(d1)
    return (g.unsqueeze(-1) * scale).reshape(-1)


def _factored_all(grads: list[torch.Tensor], accumulators: list[tuple[torch.Tensor, ...]], d: torch.Tensor,
                  dims: list[tuple[int, int] | None]) -> list[torch.Tensor]:
    """:func:`_factored_full` / :func:`_factored_pair` for every tensor of the step in one call
    (compiled: one graph per list of shapes, so a step pays one compiled call's host overhead
    instead of one per tensor); ``accumulators[i]`` is ``(full,)`` or ``(row, col)``, ``dims[i]``
    :func:`lopt.learned.features.factored_dims` of tensor ``i``."""
    out = []
    for g, acc, dim in zip(grads, accumulators, dims):
        g = g.to(_f32)
        out.append(_factored_full(g, acc[0], d) if dim is None else _factored_pair(g, acc[0], acc[1], d, *dim))
    return out


def _distance_sums_all(grads, params, params0, grad_sums, weight, decay: float) -> torch.Tensor:
    """The sum over tensors of :func:`_distance_sums_fused` (flat tensors), in one call."""
    total = None
    for g, p, p0, s in zip(grads, params, params0, grad_sums):
        sums = _distance_sums_fused(g, p, p0, s, weight, decay)
        total = sums if total is None else total + sums
    return total


class NominalPort(Port):
    """The ``nominal`` architecture on PyTorch tensors.

    State per parameter: ``momentum`` ``(*p.shape, 3)``, ``rms`` ``p.shape``, and either
    ``factored_row``/``factored_col`` (rank >= 2) or ``factored_full`` (rank < 2), all float32;
    with ``step_size="distance"`` also ``grad_sum`` and ``params0`` (``p.shape``) and the group's
    ``distance`` and ``numerator`` (0-d, the same in every tensor's state). With
    ``state_dtype="bfloat16"`` the momenta, ``rms``, ``grad_sum`` and ``params0`` are bfloat16:
    the step widens them, computes in float32 and rounds the new values stochastically with the
    bits the JAX step uses (momenta roles ``0..k-1``, ``rms`` ``k``, ``grad_sum`` ``k + 1``).
    """

    name: ClassVar[str] = "nominal"
    rows_forms = (nominal_rows.rows_eager, nominal_rows.rows_fused)
    bfloat16_state: ClassVar[bool] = True
    finite_updates: ClassVar[bool] = True  # the rows functions write 0 for a non-finite update
    masks_state: ClassVar[bool] = True  # every state write keeps the old value of a non-finite entry
    #: the compiled pass of the distance step's sums (float32 state, after :meth:`use_compile`)
    _distance_sums: CompiledRows | None = None
    #: the compiled factored step of all tensors (after :meth:`use_compile`)
    _factored: CompiledRows | None = None

    def __init__(self, arch, theta):
        super().__init__(arch, theta)
        self._weights_t: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def use_compile(self) -> None:
        """Compiles the rows function (:meth:`Port.use_compile`), the factored second moments'
        step and, for the distance step with float32 state, its pass (``grad_sum``, the dot and
        the L1 norm in one kernel per tensor instead of five eager passes); each of the last two
        takes every tensor of the step in one call (one compiled call's host overhead per step,
        not one per tensor: a GPU step waits for its host)."""
        super().use_compile()
        if self._compiled is None or not self._compiled.active:  # compiling is impossible here: all eager
            return
        # ~20 eager operations per tensor -> a few kernels
        self._factored = CompiledRows(_factored_all, _factored_all)
        if self.arch.step_size == "distance" and self.state_dtype == _f32:
            self._distance_sums = CompiledRows(_distance_sums_all, _distance_sums_all)


    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        shape, dev, stored = tuple(param.shape), param.device, self.state_dtype
        state = {
            "momentum": torch.zeros((*shape, len(self.arch.decays)), dtype=stored, device=dev),
            "rms": torch.zeros(shape, dtype=stored, device=dev),
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
        if self.arch.step_size == "distance":  # the group's estimate is kept (identically) by every tensor
            state["grad_sum"] = torch.zeros(shape, dtype=stored, device=dev)
            state["params0"] = param.detach().to(_f32).to(stored, copy=True)  # bfloat16: nearest, as JAX casts x0
            state["distance"] = torch.tensor(self.arch.initial_distance, dtype=_f32, device=dev)
            state["numerator"] = torch.zeros((), dtype=_f32, device=dev)
        return state

    def _distance_step(self, params, grads, states, lr: torch.Tensor, count: int, positions) -> torch.Tensor:
        """Advances the distance estimate (:mod:`lopt.learned.distance`) and returns this step's ``d``.

        The estimate spans the param group (JAX: every leaf given to ``update``). Its start
        ``max(initial_distance, relative_initial_distance * rms(x0))`` is set at the first step,
        the first time the whole group's ``x0`` is at hand; the factor is at least the machine
        epsilon of the group's coarsest parameter dtype, as in JAX.
        """
        if count == 0 and self.arch.relative_initial_distance:  # from x0 itself (before any bfloat16 cast)
            total = sum(p.numel() for p in params)
            square_sum = sum(torch.sum(torch.square(p.detach().to(_f32))) for p in params)
            rms = torch.sqrt(square_sum / max(total, 1))
            # at least the coarsest parameter dtype's resolution (JAX: distance.dtype_resolution)
            relative = max([self.arch.relative_initial_distance]
                           + [torch.finfo(p.dtype).eps for p in params if p.dtype.is_floating_point])
            start = torch.clamp(relative * rms, min=self.arch.initial_distance)
            for s in states:
                s["distance"].copy_(start)
        d = states[0]["distance"].clone()
        weight = d * d * lr
        decay = self.arch.distance_decay
        if self.state_dtype == _f32:  # one pass per tensor: grad_sum in place, the dot and the L1 norm
            flat = ([g.reshape(-1) for g in grads], [p.detach().reshape(-1) for p in params],
                    [s["params0"].reshape(-1) for s in states], [s["grad_sum"].view(-1) for s in states])
            if self._distance_sums is not None:  # every tensor in one compiled call
                totals = self._distance_sums(*flat, weight, decay)
            else:
                totals = sum(_distance_sums_eager(*pieces, weight, decay) for pieces in zip(*flat))
            dot, l1 = totals[0], totals[1]
            numerator = decay * states[0]["numerator"] + weight * dot
            return self._advance_distance(states, d, numerator, l1)
        dot = sum(torch.dot(g.reshape(-1).to(_f32), (s["params0"].to(_f32) - p.detach().to(_f32)).reshape(-1))
                  for g, p, s in zip(grads, params, states))
        numerator = decay * states[0]["numerator"] + weight * dot
        l1 = torch.zeros((), dtype=_f32, device=d.device)
        role = len(self.arch.decays) + 1
        for g, s, position in zip(grads, states, positions):
            grad_sum = s["grad_sum"].to(_f32)
            new = grad_sum * decay + weight * g.to(_f32)
            l1 = l1 + new.abs().sum()  # of the float32 sum, as JAX (it rounds and masks the state after)
            keep_finite(grad_sum, new)  # a kept entry is a bfloat16 value, which rounds to itself
            bits = SR.entry_bits(tuple(grad_sum.shape), count + 1, position, grad_sum.device)
            s["grad_sum"].copy_(SR.to_bfloat16(grad_sum, SR.split_bits(bits, role)))
        return self._advance_distance(states, d, numerator, l1)

    @staticmethod
    def _advance_distance(states, d: torch.Tensor, numerator: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """Stores ``max(d, numerator / l1)`` (0 where that is undefined) and the numerator in every
        tensor's state; returns this step's ``d`` (the old one)."""
        estimate = torch.where(l1 > 0, numerator / torch.where(l1 > 0, l1, torch.ones_like(l1)), torch.zeros_like(l1))
        estimate = torch.where(torch.isfinite(estimate), estimate, torch.zeros_like(estimate))
        new_d = torch.maximum(d, estimate)
        numerator = torch.where(torch.isfinite(numerator), numerator, states[0]["numerator"])
        for s in states:
            s["distance"].copy_(new_d)
            s["numerator"].copy_(numerator)
        return d

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

    def _step_constants(self, count: int, num_steps: int | None, shapes, device: torch.device) -> dict:
        """This step's constants, computed on the CPU and moved to ``device`` in one copy.

        Every separate ``.to(device)`` of a CPU tensor waits for the device to finish the work
        queued before it (a blocking copy), so the decays, bias corrections, learning rate and the
        ``[T, hidden + 2]`` per-tensor table travel as one packed tensor, from pinned memory
        without blocking on CUDA.

        Returns:
            ``decays``, ``m_correction`` ``[k]``, ``v_correction``, ``lr`` (0-d),
            ``factored_decay`` ``[1]``, ``sqrt_sizes`` ``[T]`` (``sqrt(numel)`` of each tensor),
            ``minus_step`` ``[T]`` and ``bias`` ``[T, hidden]``, all views of one tensor on ``device``.
        """
        scalars = self._scalars(count, num_steps)
        bias, minus_step = self._tensor_table(shapes, scalars)
        parts = {
            "decays": scalars["decays"], "m_correction": scalars["m_correction"],
            "v_correction": scalars["v_correction"], "lr": scalars["lr"],
            "factored_decay": torch.tensor([self.arch.factored_decay], dtype=_f32),
            "sqrt_sizes": torch.tensor([math.sqrt(max(math.prod(s), 1)) for s in shapes], dtype=_f32),
            "minus_step": minus_step, "bias": bias,
        }
        packed = torch.cat([v.reshape(-1).to(_f32) for v in parts.values()])
        if device.type == "cuda":
            packed = packed.pin_memory().to(device, non_blocking=True)
        else:
            packed = packed.to(device)
        out, start = {}, 0
        for name, value in parts.items():
            out[name] = packed[start : start + value.numel()].view(value.shape)
            start += value.numel()
        return out

    def _transposed(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's weights transposed (``[out, in]``, contiguous) on ``device``, made once."""
        if device not in self._weights_t:
            net = self.theta(device)["network"]
            self._weights_t[device] = tuple(net[w].t().contiguous() for w in ("w0", "w1", "w2"))
        return self._weights_t[device]

    def _tensor_table(self, shapes, scalars) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tensor quantities on the CPU, as the JAX step computes them.

        Returns:
            ``(bias [T, hidden], minus_step [T])``: each tensor's first-layer bias (``b0``
            plus the time and tensor context through ``w_context``) and ``-(lr * mult)``.
        """
        th = self.theta(torch.device("cpu"))
        net = th["network"]
        tensor_context = torch.tensor(
            [
                [
                    float(len(s) < 2),
                    math.log10(max(math.prod(s), 1)) / 4.0,
                    math.log10(_fan_in(s)) / 4.0,
                ]
                for s in shapes
            ],
            dtype=_f32,
        )
        time_context = scalars["time_context"].expand(len(shapes), -1)
        bias = net["b0"] + torch.cat([time_context, tensor_context], dim=1) @ net["w_context"]
        mults = []
        for s in shapes:
            if len(s) < 2:
                mults.append(torch.exp(th["log_tensor_mult"][0]))
            else:
                log_fan = math.log(_fan_in(s) / jax_nominal.FAN_IN_REFERENCE)
                mults.append(torch.exp(th["log_tensor_mult"][1] - th["mup_exponent"] * log_fan))
        return bias, -(scalars["lr"] * torch.stack(mults))

    def update(self, params, grads, states, count, loss, num_steps, positions=None):
        del loss
        arch = self.arch
        device = params[0].device
        net = self.theta(device)["network"]
        shapes = [tuple(p.shape) for p in params]
        sizes = [p.numel() for p in params]
        const = self._step_constants(count, num_steps, shapes, device)
        w0t, w1t, w2t = self._transposed(device)
        step = nominal_rows.Step(
            decays=const["decays"],
            one_minus_decays=1.0 - const["decays"],
            m_correction=const["m_correction"],
            v_correction=const["v_correction"],
            w0t=w0t,
            w1t=w1t,
            b1=net["b1"],
            w2t=w2t,
            b2=net["b2"],
        )
        consts = nominal_rows.Consts(arch.b2, arch.eps, arch.input_clip, arch.update_clip, arch.anchored_direction)

        # Whole-tensor quantities first: the factored gradient and each tensor's RMS.
        dims = [F.factored_dims(shape) for shape in shapes]
        accumulators = [(s["factored_full"],) if dim is None else (s["factored_row"], s["factored_col"])
                        for s, dim in zip(states, dims)]
        fac = (self._factored or _factored_all)(list(grads), accumulators, const["factored_decay"], dims)
        if all(p.dtype == _f32 for p in params):  # one multi-tensor kernel
            norms = torch.stack(torch._foreach_norm([p.detach() for p in params]))
        else:
            norms = torch.stack([torch.linalg.vector_norm(p.detach(), dtype=_f32) for p in params])
        p_rms = norms / const["sqrt_sizes"]
        minus_step = const["minus_step"]
        if positions is None:
            positions = list(range(len(params)))
        if arch.step_size == "distance":
            minus_step = minus_step * self._distance_step(params, grads, states, const["lr"], count, positions)
        table = torch.cat([const["bias"], (p_rms + 1e-8)[:, None], minus_step[:, None]], dim=1)

        g_rows = [g.reshape(-1) for g in grads]
        p_rows = [p.detach().reshape(-1) for p in params]
        m_rows = [s["momentum"].view(-1, len(arch.decays)) for s in states]
        v_rows = [s["rms"].view(-1) for s in states]
        if self._compiled is not None:  # no temporaries in memory: few, large chunks (on a GPU
            # every chunk is a compiled call the host must make: 16M rows take a 100M-parameter
            # model's 12.5M-entry matrices whole, 9 calls per step instead of 25)
            rows = 1 << (16 if device.type == "cpu" else 24)
        else:
            rows = chunks.chunk_rows(3 * arch.hidden_size + 24, device)
        plan = self.plan(sizes, device, rows)
        out = torch.empty(plan.total, dtype=_f32, device=device)
        rows = self._compiled or nominal_rows.rows_eager
        salts = torch.tensor(positions, dtype=torch.int64, device=device) if self.state_dtype != _f32 else None
        for i, start in enumerate(plan.starts):
            m, v = plan.take(m_rows, i), plan.take(v_rows, i)
            tab, seg = plan.table_rows(table, i)
            if self.state_dtype != _f32:  # computed in float32, rounded below
                m, v = m.to(_f32), v.to(_f32)
            rows(
                plan.take(g_rows, i),
                plan.take(p_rows, i),
                m,
                v,
                plan.take(fac, i),
                tab,
                seg,
                out[start : start + m.shape[0]],
                step,
                consts,
            )
            if self.state_dtype != _f32:
                m, v = self.round_chunk(m, v, plan, i, count + 1, salts)
            plan.put(m_rows, i, m)
            plan.put(v_rows, i, v)
        return ops.split_as(out, shapes)

