"""The host part of a ``taskset`` mixture's set-up: drawing the catalogue and building the pools.

Before any program compiles, a mixture run draws its structures from the ``taskset`` catalogue
(each candidate built and its training step traced to count FLOPs against the budget) and builds
one stacked pool of tasks per structure. This benchmark times those two parts for ``--buckets`` x
``--configs``, each in a fresh process: first with an empty task-cost cache, then with the cache the
first process left (:mod:`lopt.tasks.cost_cache`). Nothing is compiled or fitted.

With ``--programs`` each process then traces and lowers every structure's bucket program and
normaliser-fit program one after another in one thread (no compilation): the Python work a cold
set-up does under the interpreter lock, whatever the device.

Usage: python benchmarks/mixture_host_setup.py [--buckets 16] [--configs 8] [--programs] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import refuse_existing_out, save


def measure(buckets: int, configs: int, programs: bool = False) -> dict:
    """One process's figures (run by the child processes)."""
    import lopt
    from lopt.tasks.mixture import base_family

    start = time.perf_counter()
    dist = lopt.tasks.taskset(seed=0)  # every taskset family, as `lopt train taskset` draws them
    drawn = dist.buckets(0, buckets, configs)
    drew = time.perf_counter()
    pools = [lopt.tasks.stack([lopt.tasks.build(c) for c in bucket]) for bucket in drawn]
    built = time.perf_counter()
    row = {"draw_s": drew - start, "build_s": built - drew, "pools": len(pools),
           "families": sorted({base_family(bucket[0]) for bucket in drawn})}
    if programs:
        row.update(trace_programs(drawn, pools))
    return row


def trace_programs(drawn: list, pools: list) -> dict:
    """Seconds to trace and lower each structure's programs one after another, in one thread: the
    bucket's PES estimate (``nominal``, concatenated layout, 8 pairs, unroll 50, the pool's configs
    twice as the engine's two halves) and its 50-step normaliser fit (the pool)."""
    import jax
    import numpy as np

    import lopt
    from lopt.meta.estimators import PES
    from lopt.meta.mixture_engine import _estimate, _init
    from lopt.meta.normalizer import DEFAULT_LEARNING_RATES
    from lopt.meta.problem import make_problem
    from lopt.meta.structure_normalizer import _grid_curves

    lo = lopt.learned.get("nominal", concatenate_tensors=True)
    key = jax.random.key(0)
    theta = jax.eval_shape(lo.init, key)
    rates = jax.device_put(np.asarray(DEFAULT_LEARNING_RATES, np.float32))
    seconds = {"problem_s": 0.0, "trace_s": 0.0, "lower_s": 0.0, "fit_trace_lower_s": 0.0}
    for configs, pool in zip(drawn, pools):
        t0 = time.perf_counter()
        estimator = PES(make_problem(lo, configs + configs, horizon=1000, unroll_length=50), num_tasks=8, std=0.01)
        state = jax.eval_shape(_init, estimator, theta, key)
        t1 = time.perf_counter()
        traced = jax.jit(_estimate).trace(estimator, theta, state, key)
        t2 = time.perf_counter()
        traced.lower()
        t3 = time.perf_counter()
        _grid_curves.trace(pool, rates, key, num_steps=50, num_seeds=1).lower()
        t4 = time.perf_counter()
        for name, value in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[name] += value
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/mixture_host_setup_<device>.json); must not exist")
    parser.add_argument("--programs", action="store_true",
                        help="also trace and lower every structure's bucket and fit programs (no compilation)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.buckets, args.configs, args.programs)))
        return
    refuse_existing_out(parser, args.out)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LOPT_COST_CACHE": cache, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        for label in ("empty cost cache", "cost cache from the first process"):
            done = subprocess.run([sys.executable, __file__, "--child", "--buckets", str(args.buckets),
                                   "--configs", str(args.configs), *(["--programs"] if args.programs else [])],
                                  check=True, capture_output=True, text=True, env=env)
            row = {"cost_cache": label, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{label:>34}: drawing the catalogue {row['draw_s']:6.1f} s, building {row['pools']} pools "
                  f"{row['build_s']:6.1f} s" + ("" if "trace_s" not in row else
                  f"; PES problems {row['problem_s']:.1f} s, bucket programs traced {row['trace_s']:.1f} s + "
                  f"lowered {row['lower_s']:.1f} s, fit programs {row['fit_trace_lower_s']:.1f} s"))
    payload = {"buckets": args.buckets, "configs_per_bucket": args.configs, "rows": rows}
    print(f"saved {save('mixture_host_setup', payload, args.out)}")


if __name__ == "__main__":
    main()
