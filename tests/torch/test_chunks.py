"""Chunk plans: every row once and in order, tensors that stand alone, per-tensor sums and table rows."""

import pytest

torch = pytest.importorskip("torch")

from lopt.torch.chunks import LONG_SEGMENT, Plan

SIZES = [5000, 3, 7000, 2, 1, 9000, 4, LONG_SEGMENT + 5]


def _rows_of(plan):
    return [(t, r) for chunk in plan.chunks for t, a, b in chunk for r in range(a, b)]


@pytest.mark.parametrize("rows", [7, 6000, 20000, 100000])
@pytest.mark.parametrize("alone", [None, 1, 4000])
def test_a_plan_covers_every_row_once_in_order(rows, alone):
    plan = Plan(SIZES, rows, alone)
    assert _rows_of(plan) == [(t, r) for t, n in enumerate(SIZES) for r in range(n)]
    assert all(sum(b - a for _, a, b in c) <= rows for c in plan.chunks)
    assert plan.total == sum(SIZES)
    lengths = [sum(b - a for _, a, b in c) for c in plan.chunks]
    assert list(plan.starts) == [sum(lengths[:i]) for i in range(len(lengths))]
    if alone is not None:  # a tensor of at least `alone` elements shares no chunk
        for chunk in plan.chunks:
            if len(chunk) > 1:
                assert all(SIZES[t] < alone for t, _, _ in chunk)
    else:  # every chunk but the last is full
        assert all(sum(b - a for _, a, b in c) == rows for c in plan.chunks[:-1])


def test_alone_rejects_non_positive_values():
    with pytest.raises(ValueError, match="alone=0"):
        Plan([3], 4, alone=0)
    with pytest.raises(ValueError, match="rows=0"):
        Plan([3], 0)


@pytest.mark.parametrize("rows", [6000, 100000])
@pytest.mark.parametrize("alone", [None, 4000])
def test_per_tensor_sums_and_table_rows_match_a_direct_computation(rows, alone):
    gen = torch.Generator().manual_seed(0)
    plan = Plan(SIZES, rows, alone)
    values = [torch.randn(3, n, generator=gen, dtype=torch.float64) for n in SIZES]
    table = torch.randn(len(SIZES), 4, generator=gen)
    sums = torch.zeros(len(SIZES), 3, dtype=torch.float64)
    for i, chunk in enumerate(plan.chunks):
        plan.add_per_tensor(sums, i, torch.cat([values[t][:, a:b] for t, a, b in chunk], dim=1))
        want = torch.cat([table[t : t + 1].expand(b - a, -1) for t, a, b in chunk])
        assert torch.equal(plan.per_row(table, i).expand_as(want), want)
        tab, seg = plan.table_rows(table, i)
        assert (seg is None) == (len(chunk) == 1)
        if seg is not None:
            assert seg.dtype == torch.int32 and torch.equal(tab[seg.long()], want)
    torch.testing.assert_close(sums, torch.stack([v.sum(dim=1) for v in values]))
