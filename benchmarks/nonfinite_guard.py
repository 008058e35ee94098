"""Cost of the non-finite guard of learned optimizers (``lopt.learned.base.mask_non_finite``).

Every learned optimizer's step zeroes non-finite update entries and keeps the old value of
non-finite state entries (elementwise ``isfinite`` selects). This times one jitted step (update +
``apply_updates``, params as in ``step_overhead.py``: 8 dense layers) of each architecture
with the guard and with it replaced by the identity, calls alternating (A, B, A, B...) so a
busy machine slows both alike; reports the median ratio guarded / unguarded.

Usage:
    python benchmarks/nonfinite_guard.py --sizes 1e6 --archs learnable_adam mlp nominal

Writes ``benchmarks/results/nonfinite_guard_<device>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
from common import save
from step_overhead import Stepper, make_params

from lopt.learned import base


def unguarded(arch: str, params: dict, grads: dict) -> Stepper:
    """A stepper compiled with the guard replaced by the identity."""
    guard = base.mask_non_finite
    base.mask_non_finite = lambda updates, new_state, old_state: (updates, new_state)
    try:
        return Stepper(arch, params, grads)
    finally:
        base.mask_non_finite = guard


def bench(arch: str, n: int, repeats: int) -> dict:
    params = make_params(n)
    grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
    guarded, plain = Stepper(arch, params, grads), unguarded(arch, params, grads)
    for stepper in (guarded, plain):
        stepper.run()
    times, plain_times = [], []
    for _ in range(repeats):
        plain_times.append(plain.run())
        times.append(guarded.run())
    return {"arch": arch, "n_params": guarded.info["n_params"], "guarded_ms": 1e3 * statistics.median(times),
            "unguarded_ms": 1e3 * statistics.median(plain_times),
            "ratio": statistics.median([t / p for t, p in zip(times, plain_times)]), "repeats": repeats}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6])
    parser.add_argument("--archs", nargs="+", default=["learnable_adam", "mlp", "nominal"])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for arch in args.archs:
            row = bench(arch, int(n), args.repeats)
            rows.append(row)
            print(f"{arch:>15} n={row['n_params']:>10,}  guarded {row['guarded_ms']:8.2f} ms  unguarded "
                  f"{row['unguarded_ms']:8.2f} ms  ratio {row['ratio']:.3f}", flush=True)
    print("wrote", save("nonfinite_guard", {"rows": rows, "load_average": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
