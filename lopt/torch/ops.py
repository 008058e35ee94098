"""Small tensor helpers shared by the PyTorch ports: splitting a flat buffer, time embeddings.

The ports with a per-parameter network write each step's updates into one flat ``[N]``
buffer (chunk by chunk, :mod:`lopt.torch.chunks`) and hand back views of it, one per tensor.
The embeddings mirror :mod:`lopt.learned.features` in the same float32 arithmetic, so
trajectories match JAX's.

Example:
    >>> import torch
    >>> from lopt.torch import ops
    >>> [t.shape for t in ops.split_as(torch.zeros(10), [(2, 3), (4,)])]
    [torch.Size([2, 3]), torch.Size([4])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["fraction_embedding", "split_as", "tanh_time_embedding"]

_f32 = torch.float32


def split_as(flat: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Views of ``flat`` (the concatenation of flattened tensors) with the given leading shapes.

    Trailing dimensions of ``flat`` beyond the first are kept (``[N, k]`` gives
    ``(*shape, k)`` pieces).
    """
    sizes = [math.prod(s) for s in shapes]
    tail = tuple(flat.shape[1:])
    return [piece.view((*s, *tail)) for piece, s in zip(flat.split(sizes, dim=0), shapes)]


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
