"""The two forms of ``nominal``'s per-row step (eager kernels; elementwise for torch.compile) agree.

``rows_fused`` is what ``torch.compile`` compiles; here it runs eagerly, so its arithmetic is
checked on every run without minutes of inductor compilation. A chunk across tensor boundaries
passes its tensors' table rows with each row's segment (``seg``); that must equal giving every
row its own copy of its table row.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lopt.torch.architectures import nominal_rows

HIDDEN, ROWS = 8, 257


def _chunk(seed, segments):
    gen = torch.Generator().manual_seed(seed)
    normal = lambda *shape: torch.randn(*shape, generator=gen)
    decays = torch.tensor([0.9, 0.99, 0.999])
    step = nominal_rows.Step(
        decays=decays, one_minus_decays=1.0 - decays, m_correction=1.0 / (1.0 - decays ** 3),
        v_correction=torch.tensor(1.0 / (1.0 - 0.999 ** 3)),
        w0t=0.5 * normal(HIDDEN, 6), w1t=0.5 * normal(HIDDEN, HIDDEN), b1=0.1 * normal(HIDDEN),
        w2t=0.3 * normal(2, HIDDEN), b2=torch.tensor([0.05, -0.02]))
    table = torch.cat([0.2 * normal(segments, HIDDEN), 1.0 + normal(segments, 1).abs(),
                       -1e-3 * (1.0 + normal(segments, 1).abs())], dim=1)
    # each segment's rows in one run, as in a chunk across tensor boundaries
    seg = None if segments == 1 else torch.sort(torch.randint(0, segments, (ROWS,), generator=gen)).values.int()
    arrays = {"g": normal(ROWS), "p": normal(ROWS), "m": 0.1 * normal(ROWS, 3), "v": 0.01 * normal(ROWS).abs(),
              "fac": normal(ROWS), "tab": table, "seg": seg}
    return arrays, step


def _run(form, arrays, step, consts):
    a = {k: (None if v is None else v.clone()) for k, v in arrays.items()}
    out = torch.empty(ROWS)
    form(a["g"], a["p"], a["m"], a["v"], a["fac"], a["tab"], a["seg"], out, step, consts)
    return out, a["m"], a["v"]


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("segments", [1, 3])
def test_fused_form_equals_eager_form(anchored, segments):
    arrays, step = _chunk(0, segments)
    consts = nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, anchored)
    fused = _run(nominal_rows.rows_fused, arrays, step, consts)
    eager = _run(nominal_rows.rows_eager, arrays, step, consts)
    for got, want in zip(fused, eager):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("form", [nominal_rows.rows_eager, nominal_rows.rows_fused])
def test_segment_index_equals_a_table_row_per_row(form):
    arrays, step = _chunk(2, 4)
    consts = nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, True)
    expanded = dict(arrays, tab=arrays["tab"][arrays["seg"].long()], seg=None)
    got, want = _run(form, arrays, step, consts), _run(form, expanded, step, consts)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the segments' rows differ: a wrong gather would not pass unnoticed
    seg = arrays["seg"].long()
    assert len(set(arrays["tab"][seg, HIDDEN + 1].tolist())) == 4


def test_anchoring_changes_the_update_and_vanishes_at_zero_gradient_history():
    arrays, step = _chunk(1, 3)
    zero = {k: (torch.zeros_like(v) if k in ("g", "m", "v", "fac") else v) for k, v in arrays.items()}
    for anchored in (False, True):
        out = _run(nominal_rows.rows_eager, zero, step, nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, anchored))[0]
        assert bool((out == 0).all()) == anchored


@pytest.mark.parametrize("form", [nominal_rows.rows_eager, nominal_rows.rows_fused])
def test_a_non_finite_row_gives_a_zero_update_and_leaves_the_others(form):
    arrays, step = _chunk(3, 2)
    consts = nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, False)
    clean, clean_m, clean_v = _run(form, arrays, step, consts)
    arrays["g"][5], arrays["p"][9] = float("nan"), float("nan")  # (an infinite p is clipped)
    arrays["g"][11] = float("inf")
    out, m, v = _run(form, arrays, step, consts)
    assert clean[5] != 0 and clean[9] != 0 and out[5] == 0 and out[9] == 0 and out[11] == 0
    others = torch.ones(ROWS, dtype=torch.bool)
    others[[5, 9, 11]] = False
    np.testing.assert_array_equal(out[others].numpy(), clean[others].numpy())
    # the state masks itself (no host-side check needed): the non-finite gradients' rows keep their
    # old momenta and second moment, a NaN parameter (not in the state's update) changes nothing there
    for row in (5, 11):
        np.testing.assert_array_equal(m[row].numpy(), arrays["m"][row].numpy())
        np.testing.assert_array_equal(v[row].numpy(), arrays["v"][row].numpy())
    np.testing.assert_array_equal(m[others].numpy(), clean_m[others].numpy())
    np.testing.assert_array_equal(v[others].numpy(), clean_v[others].numpy())
    np.testing.assert_array_equal(m[9].numpy(), clean_m[9].numpy())
