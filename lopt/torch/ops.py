"""Batched tensor operations shared by the PyTorch ports: flat buffers, per-tensor moments, MLPs.

The ports work on *one flattened buffer per step*: the gradients (and parameters, momenta,
...) of all tensors updated together are concatenated into ``[N]`` or ``[N, k]`` buffers, so
the elementwise work and the per-parameter network run as a handful of large kernels
whatever the number of tensors. Only per-tensor reductions (the second-moment normalisation)
loop over tensors, one reduction each.

Each function mirrors a function of :mod:`lopt.learned.features` or :mod:`lopt.learned.nn`
and computes the same float32 arithmetic in the same order, so trajectories match JAX's.

Example:
    >>> import torch
    >>> from lopt.torch import ops
    >>> flat = ops.flat_cat([torch.ones(2, 3), torch.zeros(4)])
    >>> flat.shape
    torch.Size([10])
    >>> [t.shape for t in ops.split_as(flat, [(2, 3), (4,)])]
    [torch.Size([2, 3]), torch.Size([4])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "CHUNK_BYTES",
    "chunk_rows",
    "flat_cat",
    "fraction_embedding",
    "mlp_apply",
    "normalize_per_tensor_",
    "split_as",
    "tanh_time_embedding",
]

#: Bytes of float32 temporaries per chunk of rows of a per-parameter network: bounds the
#: memory of its activations however large the model, with chunks large enough that a GPU
#: launches few kernels per step.
CHUNK_BYTES = 1 << 28


def chunk_rows(floats_per_row: int) -> int:
    """Rows per chunk when each row holds ``floats_per_row`` float32 temporaries.

    Example:
        >>> chunk_rows(64)
        1048576
    """
    return max(1, CHUNK_BYTES // (4 * max(1, floats_per_row)))

_f32 = torch.float32


def flat_cat(tensors: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Concatenates tensors as float32 rows: ``[sum numel]`` or ``[sum numel / width, width]``.

    Args:
        tensors: tensors on one device (any float dtype; they are cast to float32).
        width: trailing width to keep (``k`` for accumulators of shape ``(*p.shape, k)``).

    Returns:
        A new float32 tensor.
    """
    shape = (-1,) if width is None else (-1, width)
    return torch.cat([t.reshape(shape).to(_f32) for t in tensors], dim=0)


def split_as(flat: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Inverse of :func:`flat_cat`: views of ``flat`` with the given leading shapes.

    Trailing dimensions of ``flat`` beyond the first are kept (``[N, k]`` gives
    ``(*shape, k)`` pieces).
    """
    sizes = [math.prod(s) for s in shapes]
    tail = tuple(flat.shape[1:])
    return [piece.view((*s, *tail)) for piece, s in zip(flat.split(sizes, dim=0), shapes)]


def normalize_per_tensor_(x: torch.Tensor, sizes: Sequence[int], eps: float = 1e-5) -> torch.Tensor:
    """Divides each feature of each tensor's rows by its root mean square, in place.

    ``x`` is ``[N, F]``: the rows of several tensors, ``sizes[i]`` rows each. Matches
    ``lopt.learned.features.second_moment_normalize`` applied tensor by tensor.

    Returns:
        ``x``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[3.0], [4.0], [10.0]])
        >>> [round(v, 3) for v in normalize_per_tensor_(x, [2, 1]).flatten().tolist()]
        [0.849, 1.131, 1.0]
    """
    pieces = list(x.split(list(sizes), dim=0))
    scales = [torch.rsqrt(eps + piece.square().mean(dim=0)) for piece in pieces]
    torch._foreach_mul_(pieces, scales)
    return x


def mlp_apply(
    net: dict[str, torch.Tensor],
    x: torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    rows_per_chunk: int | None = None,
) -> torch.Tensor:
    """Applies an MLP (``lopt.learned.nn.mlp_init`` weights) to the rows of ``x``, in chunks.

    The context's contribution to the first layer is folded into its bias once, exactly as
    ``lopt.learned.nn.mlp_apply`` does; ReLU between layers, none after the last.

    Args:
        net: ``{"w0", "b0", ...}`` float32 tensors on ``x``'s device.
        x: ``[N, n_x]`` per-row inputs.
        context: optional ``[n_c]`` inputs shared by all rows.
        rows_per_chunk: rows per chunk (default: :func:`chunk_rows` of the widest layer).

    Returns:
        ``[N, out]`` float32.
    """
    n_layers = len(net) // 2
    w0, b0 = net["w0"], net["b0"]
    n_x = x.shape[-1]
    if context is not None:
        b0 = b0 + context @ w0[n_x:]
        w0 = w0[:n_x]
    out = x.new_empty((x.shape[0], net[f"w{n_layers - 1}"].shape[-1]))
    if rows_per_chunk is None:
        rows_per_chunk = chunk_rows(2 * max(w.shape[-1] for k, w in net.items() if k[0] == "w"))
    for start in range(0, x.shape[0], rows_per_chunk):
        h = torch.addmm(b0, x[start : start + rows_per_chunk], w0)
        for i in range(1, n_layers):
            h = torch.addmm(net[f"b{i}"], torch.relu_(h), net[f"w{i}"])
        out[start : start + rows_per_chunk] = h
    return out


def tanh_time_embedding(count: int, timescales: Sequence[float]) -> torch.Tensor:
    """``tanh(count / s - 1)`` for each timescale, float32 on the CPU.

    Example:
        >>> [round(v, 4) for v in tanh_time_embedding(10, [1.0, 10.0]).tolist()]
        [1.0, 0.0]
    """
    s = torch.tensor(list(timescales), dtype=_f32)
    return torch.tanh(torch.tensor(float(count), dtype=_f32) / s - 1.0)


def fraction_embedding(fraction: torch.Tensor, points: Sequence[float]) -> torch.Tensor:
    """``tanh(10 * (fraction - x))`` at each point ``x`` (float32, on ``fraction``'s device)."""
    x = torch.tensor(list(points), dtype=_f32, device=fraction.device)
    return torch.tanh((fraction.to(_f32) - x) * 10.0)
