"""The per-parameter part of ``nominal``'s step on one chunk of rows, in two equal forms.

Both forms update the chunk's momenta and second moment in place (an entry whose new value
would be NaN or infinite keeps its old one, as JAX masks the state; the step's features read
the new values, as JAX's do) and write the chunk's
updates into ``out``, with the arithmetic of :class:`lopt.learned.NominalLOpt` in the same
order (results differ from JAX's only by float32 rounding):

* :func:`rows_eager` for eager PyTorch: the features as a ``[6, n]`` block and the network as
  three ``addmm`` on ``[hidden, n]`` activations (few large kernels; on the CPU the chunk is
  cache-sized, so the activations never reach main memory);
* :func:`rows_fused` for ``torch.compile``: the network written as unrolled elementwise
  multiply-adds (as the JAX version is), so the compiler fuses features, network, state and
  update into one loop over the rows with no per-row temporaries in memory.

Per-chunk tensors: ``g``, ``p`` ``[n]`` (any float dtype), ``m`` ``[n, 3]`` and ``v`` ``[n]``
float32 state (updated in place), ``fac`` ``[n]`` the factored-normalised gradient, ``tab``
``[S, hidden + 2]`` per-tensor quantities (first-layer bias with the tensor's context,
``rms(p) + 1e-8``, ``-(lr * mult)``) of the chunk's tensors, ``seg`` ``None`` when ``S`` is 1
(the chunk lies in one tensor) else ``[n]`` integers, row ``r``'s row of ``tab``
(:meth:`lopt.torch.chunks.Plan.table_rows`), ``out`` ``[n]`` float32 (a non-finite update is
written as 0, as the optimizer does for every architecture).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Consts", "Step", "keep_finite", "rows_eager", "rows_fused"]

_f32 = torch.float32


class Consts(NamedTuple):
    """Python-float constants of one optimizer (baked into a compiled graph)."""

    b2: float
    eps: float
    input_clip: float
    update_clip: float
    anchored: bool = False  # NominalLOpt.anchored_direction


class Step(NamedTuple):
    """Per-step float32 tensors on the chunk's device.

    Attributes:
        decays: ``[3]`` momentum decays; ``one_minus_decays`` ``1 - decays``.
        m_correction: ``[3]`` bias corrections of the momenta; ``v_correction`` ``[]``.
        w0t, w1t, w2t: the network's weights transposed (``[out, in]``); ``b1``, ``b2``
            biases (the first layer's bias is per row, in ``tab``).
    """

    decays: torch.Tensor
    one_minus_decays: torch.Tensor
    m_correction: torch.Tensor
    v_correction: torch.Tensor
    w0t: torch.Tensor
    w1t: torch.Tensor
    b1: torch.Tensor
    w2t: torch.Tensor
    b2: torch.Tensor


def keep_finite(state: torch.Tensor, new: torch.Tensor) -> None:
    """Writes ``new`` into ``state`` in place where it is finite; a non-finite entry keeps its
    old value (:func:`lopt.learned.base.mask_non_finite`)."""
    state.copy_(torch.where(torch.isfinite(new), new, state))


def rows_eager(g, p, m, v, fac, tab, seg, out, s: Step, c: Consts) -> None:
    """One chunk with few large eager kernels (see the module docstring)."""
    hidden = s.w0t.shape[0]
    if seg is not None:
        tab = tab.index_select(0, seg)
    g = g.to(_f32)
    new_m = m * s.decays + g[:, None] * s.one_minus_decays
    new_v = v * c.b2 + g.square().mul_(1 - c.b2)
    keep_finite(m, new_m)  # the step itself reads the new values, masked or not (as JAX)
    keep_finite(v, new_v)
    m, v = new_m, new_v
    precond = (v * s.v_correction).sqrt_().add_(c.eps).reciprocal_()
    x = torch.empty((6, g.shape[0]), dtype=_f32, device=g.device)
    torch.mul(g, precond, out=x[0])
    torch.mul(m.t(), s.m_correction[:, None], out=x[1:4])
    x[1:4].mul_(precond)
    x[4].copy_(fac)
    torch.div(p.to(_f32), tab[:, hidden], out=x[5])
    nominal = x[1].clone()
    x.clamp_(-c.input_clip, c.input_clip)
    o = _network_eager(x, tab, s)
    if c.anchored:  # minus the network's direction with the gradient inputs (rows 0-4) at zero
        x[:5].zero_()  # the same ops as above on these inputs: the same rounding, 0 at rest
        o[0].sub_(_network_eager(x, tab, s)[0])
    combined = nominal.add_(o[0]).clamp_(-c.update_clip, c.update_clip)
    torch.mul(combined.mul_(tab[:, hidden + 1]), o[1].clamp_(-4.0, 4.0).exp_(), out=out)
    out.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # a blown-up network output is no step


def _network_eager(x, tab, s: Step) -> torch.Tensor:
    """``[direction, log_scale]`` rows of the network on the ``[6, n]`` inputs ``x``."""
    hidden = s.w0t.shape[0]
    h = torch.addmm(tab[:, :hidden].t(), s.w0t, x).relu_()
    h = torch.addmm(s.b1[:, None], s.w1t, h).relu_()
    return torch.addmm(s.b2[:, None], s.w2t, h)


def _network_fused(xs, w0t, bias0, s: Step, outputs: int = 2) -> list:
    """The network's first ``outputs`` of ``[direction, log_scale]`` on the input list ``xs``
    (``w0t``: the first layer's columns for them; ``bias0``: its per-row biases)."""
    hidden = s.w0t.shape[0]
    h = [torch.relu(y) for y in _dense(xs, w0t, bias0)]
    h = [torch.relu(y) for y in _dense(h, s.w1t, [s.b1[j] for j in range(hidden)])]
    return _dense(h, s.w2t[:outputs], [s.b2[j] for j in range(outputs)])


def _dense(xs, wt, bias):
    """``y_j = sum_i x_i wt[j, i] + bias_j`` unrolled (``bias`` a list of per-row or 0-d terms)."""
    ys = []
    for j in range(wt.shape[0]):
        acc = xs[0] * wt[j, 0]
        for i in range(1, len(xs)):
            acc = acc + xs[i] * wt[j, i]
        ys.append(acc + bias[j])
    return ys


def rows_fused(g, p, m, v, fac, tab, seg, out, s: Step, c: Consts) -> None:
    """One chunk as elementwise ops only, for ``torch.compile`` (see the module docstring).

    Each column of ``tab`` is gathered on its own (``tab[:, j][seg]``): compiled, every row
    reads its few table entries in the fused loop, and no ``[n, hidden + 2]`` copy is made.
    """
    hidden = s.w0t.shape[0]
    cols = [tab[:, j] if seg is None else tab[:, j][seg] for j in range(hidden + 2)]
    g = g.to(_f32)
    new_m = m * s.decays + g[:, None] * s.one_minus_decays
    new_v = v * c.b2 + g * g * (1 - c.b2)
    keep_finite(m, new_m)  # the step itself reads the new values, masked or not (as JAX)
    keep_finite(v, new_v)
    m, v = new_m, new_v
    precond = 1.0 / (torch.sqrt(v * s.v_correction) + c.eps)
    moments = [m[:, k] * s.m_correction[k] * precond for k in range(3)]
    xs = [g * precond, *moments, fac, p.to(_f32) / cols[hidden]]
    xs = [x.clamp(-c.input_clip, c.input_clip) for x in xs]
    direction, log_scale = _network_fused(xs, s.w0t, cols[:hidden], s)
    if c.anchored:  # minus the network's direction with the gradient inputs at zero
        direction = direction - _network_fused(xs[5:], s.w0t[:, 5:], cols[:hidden], s, outputs=1)[0]
    combined = torch.clamp(moments[0] + direction, -c.update_clip, c.update_clip)
    update = cols[hidden + 1] * combined * torch.exp(torch.clamp(log_scale, -4.0, 4.0))
    out.copy_(torch.nan_to_num(update, nan=0.0, posinf=0.0, neginf=0.0))  # a blown-up output is no step
