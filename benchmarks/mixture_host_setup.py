"""The host part of a ``taskset`` mixture's set-up: drawing the catalogue and building the pools.

Before any program compiles, a mixture run draws its structures from the ``taskset`` catalogue
(each candidate built and its training step traced to count FLOPs against the budget) and builds
one stacked pool of tasks per structure. This benchmark times those two parts for ``--buckets`` x
``--configs``, each in a fresh process: first with an empty task-cost cache, then with the cache the
first process left (:mod:`lopt.tasks.cost_cache`). Nothing is compiled or fitted.

Usage: python benchmarks/mixture_host_setup.py [--buckets 16] [--configs 8] [--out FILE]
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


def measure(buckets: int, configs: int) -> dict:
    """One process's figures (run by the child processes)."""
    import lopt
    from lopt.tasks.mixture import base_family

    start = time.perf_counter()
    dist = lopt.tasks.taskset(seed=0)  # every taskset family, as `lopt train taskset` draws them
    drawn = dist.buckets(0, buckets, configs)
    drew = time.perf_counter()
    pools = [lopt.tasks.stack([lopt.tasks.build(c) for c in bucket]) for bucket in drawn]
    built = time.perf_counter()
    return {"draw_s": drew - start, "build_s": built - drew, "pools": len(pools),
            "families": sorted({base_family(bucket[0]) for bucket in drawn})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/mixture_host_setup_<device>.json); must not exist")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.buckets, args.configs)))
        return
    refuse_existing_out(parser, args.out)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LOPT_COST_CACHE": cache, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        for label in ("empty cost cache", "cost cache from the first process"):
            done = subprocess.run([sys.executable, __file__, "--child", "--buckets", str(args.buckets),
                                   "--configs", str(args.configs)], check=True, capture_output=True, text=True,
                                  env=env)
            row = {"cost_cache": label, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{label:>34}: drawing the catalogue {row['draw_s']:6.1f} s, building {row['pools']} pools "
                  f"{row['build_s']:6.1f} s")
    payload = {"buckets": args.buckets, "configs_per_bucket": args.configs, "rows": rows}
    print(f"saved {save('mixture_host_setup', payload, args.out)}")


if __name__ == "__main__":
    main()
