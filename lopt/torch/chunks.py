"""Row chunks over the parameters of one step: the plan that lets a port work cache-sized pieces.

The per-parameter networks of ``nominal`` and ``mlp`` make several temporaries per parameter
(features, hidden activations). Run over all parameters at once, each temporary is a pass
over main memory; run over chunks of rows that fit in the cache (CPU) or in a few hundred MiB
(GPU), the temporaries stay small and the state is updated in place, chunk by chunk.

A plan cuts the concatenation of all tensors (flattened, in order) into consecutive chunks
of at most ``rows`` rows. A chunk is a tuple of segments ``(tensor index, first row, stop
row)``; most chunks lie inside one tensor (one segment: they are views, no copy), a chunk
that crosses tensor boundaries (small tensors, a tensor's tail) is gathered with ``cat``.
With ``alone=k``, tensors of at least ``k`` elements share no chunk (their tail is a short
chunk of its own): on a GPU, one more launch costs less than gathering and writing back a
large chunk's pieces.

Example:
    >>> import torch
    >>> plan = Plan([6, 1, 2], rows=4)
    >>> plan.chunks
    (((0, 0, 4),), ((0, 4, 6), (1, 0, 1), (2, 0, 1)), ((2, 1, 2),))
    >>> pieces = [torch.arange(6.0), torch.tensor([10.0]), torch.tensor([20.0, 21.0])]
    >>> plan.take(pieces, 1).tolist()
    [4.0, 5.0, 10.0, 20.0]
    >>> plan.starts
    (0, 4, 8)
    >>> Plan([6, 1, 2], rows=4, alone=5).chunks
    (((0, 0, 4),), ((0, 4, 6),), ((1, 0, 1), (2, 0, 2)))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["CPU_CHUNK_BYTES", "GPU_CHUNK_BYTES", "LONG_SEGMENT", "Plan", "chunk_rows"]

#: Bytes of float32 temporaries per chunk on the CPU: about a core's L2 cache, so a chunk's
#: features and activations are written and read again without touching main memory.
CPU_CHUNK_BYTES = 1 << 22
#: Bytes of float32 temporaries per chunk on accelerators: large chunks, few kernel launches.
GPU_CHUNK_BYTES = 1 << 28
#: Rows from which :meth:`Plan.add_per_tensor` reduces a segment on its own.
LONG_SEGMENT = 1 << 12

Segment = tuple[int, int, int]


def chunk_rows(floats_per_row: int, device: torch.device) -> int:
    """Rows per chunk when each row holds ``floats_per_row`` float32 temporaries on ``device``.

    Example:
        >>> chunk_rows(64, torch.device("cpu"))
        16384
    """
    budget = CPU_CHUNK_BYTES if device.type == "cpu" else GPU_CHUNK_BYTES
    return max(1, budget // (4 * max(1, floats_per_row)))


class Plan:
    """Consecutive chunks of at most ``rows`` rows over tensors of ``sizes`` elements.

    Args:
        sizes: number of elements of each tensor, in order.
        rows: the most rows in one chunk.
        alone: tensors of at least this many elements get chunks of their own (``None``:
            every chunk is filled to ``rows``, across tensor boundaries).

    Attributes:
        chunks: the chunks, each a tuple of ``(tensor, start, stop)`` segments.
        starts: each chunk's first row in the concatenation of all tensors.
        total: the number of rows of all tensors.
    """

    def __init__(self, sizes: Sequence[int], rows: int, alone: int | None = None):
        if rows < 1 or (alone is not None and alone < 1):
            raise ValueError(f"rows={rows} and alone={alone} must be positive (alone may be None).")
        chunks: list[tuple[Segment, ...]] = []
        current: list[Segment] = []
        filled = 0
        for index, size in enumerate(sizes):
            own = alone is not None and size >= alone
            if own and current:  # close the shared chunk before a tensor that stands alone
                chunks.append(tuple(current))
                current, filled = [], 0
            start = 0
            while start < size:
                take = min(size - start, rows - filled)
                current.append((index, start, start + take))
                filled += take
                start += take
                if filled == rows or (own and start == size):
                    chunks.append(tuple(current))
                    current, filled = [], 0
        if current:
            chunks.append(tuple(current))
        self.chunks: tuple[tuple[Segment, ...], ...] = tuple(chunks)
        starts, total = [], 0
        for chunk in self.chunks:
            starts.append(total)
            total += sum(stop - start for _, start, stop in chunk)
        self.starts: tuple[int, ...] = tuple(starts)
        self.total = total
        self._tables: dict[tuple, torch.Tensor] = {}  # small index tensors per chunk and device

    def take(self, tensors: Sequence[torch.Tensor], chunk: int) -> torch.Tensor:
        """The rows of chunk ``chunk`` from per-tensor ``[numel, ...]`` tensors.

        A view when the chunk lies inside one tensor (writes go to that tensor), else a new
        tensor (write it back with :meth:`put`).
        """
        segments = self.chunks[chunk]
        if len(segments) == 1:
            index, start, stop = segments[0]
            return tensors[index][start:stop]
        return torch.cat([tensors[i][a:b] for i, a, b in segments])

    def put(self, tensors: Sequence[torch.Tensor], chunk: int, values: torch.Tensor) -> None:
        """Writes ``values`` (from :meth:`take`, modified) back where chunk ``chunk`` came from."""
        segments = self.chunks[chunk]
        if len(segments) == 1:
            index, start, stop = segments[0]
            target = tensors[index][start:stop]
            if target.data_ptr() != values.data_ptr():
                target.copy_(values)
            return
        offset = 0
        for i, a, b in segments:
            tensors[i][a:b].copy_(values[offset : offset + b - a])
            offset += b - a

    def add_per_tensor(self, sums: torch.Tensor, chunk: int, values: torch.Tensor) -> None:
        """Adds the row sums of ``values`` ``[F, n]`` (chunk ``chunk``) to ``sums[tensor]``.

        Each segment of at least :data:`LONG_SEGMENT` rows is reduced on its own (scattering
        its rows into one sum would serialise on that sum); the shorter ones are scattered
        together with ``index_add_``.

        Example:
            >>> plan = Plan([3, 2], rows=4)
            >>> sums = torch.zeros(2, 1)
            >>> for i in range(len(plan.chunks)):
            ...     plan.add_per_tensor(sums, i, torch.ones(1, 4 if i == 0 else 1))
            >>> sums.flatten().tolist()
            [3.0, 2.0]
        """
        segments = self.chunks[chunk]
        if len(segments) == 1:
            sums[segments[0][0]] += values.sum(dim=1)
            return
        offset, runs, shorts = 0, [], []  # runs: [first, stop) row ranges of consecutive short segments
        for j, (i, a, b) in enumerate(segments):
            if b - a >= LONG_SEGMENT:
                sums[i] += values[:, offset : offset + b - a].sum(dim=1)
            else:
                shorts.append(j)
                if runs and runs[-1][1] == offset:
                    runs[-1][1] += b - a
                else:
                    runs.append([offset, offset + b - a])
            offset += b - a
        if shorts:
            ids, seg = self.segments(chunk, values.device)
            local = torch.zeros((len(segments), values.shape[0]), dtype=sums.dtype, device=values.device)
            for first, stop in runs:
                local.index_add_(0, seg[first:stop], values[:, first:stop].t())
            short = self._cached(("short", chunk, values.device), shorts)
            sums.index_add_(0, ids[short], local[short])

    def _cached(self, key: tuple, values: list[int]) -> torch.Tensor:
        """``values`` as an int64 tensor on ``key[-1]`` (a device), made once per key: no host
        to device copy in later steps."""
        if key not in self._tables:
            self._tables[key] = torch.tensor(values, dtype=torch.int64, device=key[-1])
        return self._tables[key]

    def segments(self, chunk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each segment's tensor (``[S]`` int64) and each row's segment (``[n]`` int32) of chunk
        ``chunk``; the row index is computed in two parallel kernels (``arange``, ``bucketize``).

        Example:
            >>> plan = Plan([3, 2], rows=4)
            >>> [t.tolist() for t in plan.segments(0, torch.device("cpu"))]
            [[0, 1], [0, 0, 0, 1]]
        """
        segments = self.chunks[chunk]
        ends = []
        for _, a, b in segments[:-1]:
            ends.append((ends[-1] if ends else 0) + b - a)
        n = sum(b - a for _, a, b in segments)
        bounds = self._cached(("bounds", chunk, device), ends)
        seg = torch.bucketize(torch.arange(n, device=device), bounds, right=True, out_int32=True)
        return self._cached(("ids", chunk, device), [i for i, _, _ in segments]), seg

    def row_positions(self, chunk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row of chunk ``chunk``: its tensor and its flat index in that tensor (int64).

        Example:
            >>> plan = Plan([3, 2], rows=4)
            >>> [t.tolist() for t in plan.row_positions(0, torch.device("cpu"))]
            [[0, 0, 0, 1], [0, 1, 2, 0]]
        """
        segments = self.chunks[chunk]
        tensor = torch.cat([torch.full((b - a,), i, dtype=torch.int64, device=device) for i, a, b in segments])
        index = torch.cat([torch.arange(a, b, dtype=torch.int64, device=device) for _, a, b in segments])
        return tensor, index

    def table_rows(self, table: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A per-tensor ``[T, ...]`` table's rows for chunk ``chunk``, unexpanded: ``(rows, seg)``.

        ``(table[t : t + 1], None)`` (broadcasts over the chunk) when the chunk lies inside
        tensor ``t``, else ``(table[tensors of the segments], seg)``: row ``r`` of the chunk
        reads ``rows[seg[r]]``, so a compiled kernel gathers from a few table rows instead of
        reading a ``[n, ...]`` copy.

        Example:
            >>> plan = Plan([3, 2], rows=4)
            >>> rows, seg = plan.table_rows(torch.tensor([[1.0], [2.0]]), 0)
            >>> rows.flatten().tolist(), seg.tolist()
            ([1.0, 2.0], [0, 0, 0, 1])
        """
        segments = self.chunks[chunk]
        if len(segments) == 1:
            index = segments[0][0]
            return table[index : index + 1], None
        ids, seg = self.segments(chunk, table.device)
        return table.index_select(0, ids), seg

    def per_row(self, table: torch.Tensor, chunk: int) -> torch.Tensor:
        """Rows of a per-tensor ``[T, ...]`` table for chunk ``chunk``.

        ``[1, ...]`` (broadcasts over the chunk) when the chunk lies inside one tensor, else
        each tensor's row gathered for each of its rows of the chunk (``[n, ...]``).

        Example:
            >>> plan = Plan([3, 2], rows=4)
            >>> plan.per_row(torch.tensor([[1.0], [2.0]]), 0).flatten().tolist()
            [1.0, 1.0, 1.0, 2.0]
        """
        rows, seg = self.table_rows(table, chunk)
        return rows if seg is None else rows.index_select(0, seg)
