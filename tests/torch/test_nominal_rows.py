"""The two forms of ``nominal``'s per-row step (eager kernels; elementwise for torch.compile) agree.

``rows_fused`` is what ``torch.compile`` compiles; here it runs eagerly, so its arithmetic is
checked on every run without minutes of inductor compilation.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lopt.torch.architectures import nominal_rows

HIDDEN, ROWS = 8, 257


def _chunk(seed, per_row_table):
    gen = torch.Generator().manual_seed(seed)
    normal = lambda *shape: torch.randn(*shape, generator=gen)
    decays = torch.tensor([0.9, 0.99, 0.999])
    step = nominal_rows.Step(
        decays=decays, one_minus_decays=1.0 - decays, m_correction=1.0 / (1.0 - decays ** 3),
        v_correction=torch.tensor(1.0 / (1.0 - 0.999 ** 3)),
        w0t=0.5 * normal(HIDDEN, 6), w1t=0.5 * normal(HIDDEN, HIDDEN), b1=0.1 * normal(HIDDEN),
        w2t=0.3 * normal(2, HIDDEN), b2=torch.tensor([0.05, -0.02]))
    table = torch.cat([0.2 * normal(ROWS if per_row_table else 1, HIDDEN),
                       torch.full((ROWS if per_row_table else 1, 1), 1.3),
                       torch.full((ROWS if per_row_table else 1, 1), -1e-3)], dim=1)
    arrays = {"g": normal(ROWS), "p": normal(ROWS), "m": 0.1 * normal(ROWS, 3), "v": 0.01 * normal(ROWS).abs(),
                  "fac": normal(ROWS), "tab": table}
    return arrays, step


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("per_row_table", [False, True])
def test_fused_form_equals_eager_form(anchored, per_row_table):
    arrays, step = _chunk(0, per_row_table)
    consts = nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, anchored)
    outs = {}
    for name, form in (("eager", nominal_rows.rows_eager), ("fused", nominal_rows.rows_fused)):
        a = {k: v.clone() for k, v in arrays.items()}
        out = torch.empty(ROWS)
        form(a["g"], a["p"], a["m"], a["v"], a["fac"], a["tab"], out, step, consts)
        outs[name] = (out, a["m"], a["v"])
    for got, want in zip(outs["fused"], outs["eager"]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=1e-9)


def test_anchoring_changes_the_update_and_vanishes_at_zero_gradient_history():
    arrays, step = _chunk(1, True)
    zero = {k: (torch.zeros_like(v) if k in ("g", "m", "v", "fac") else v) for k, v in arrays.items()}
    for anchored in (False, True):
        out = torch.empty(ROWS)
        consts = nominal_rows.Consts(0.999, 1e-8, 10.0, 10.0, anchored)
        nominal_rows.rows_eager(zero["g"], zero["p"], zero["m"].clone(), zero["v"].clone(), zero["fac"],
                                zero["tab"], out, step, consts)
        assert bool((out == 0).all()) == anchored
