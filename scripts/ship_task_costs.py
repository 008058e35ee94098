"""Writes the task costs lopt ships: every candidate of the ``taskset`` preset's seed-0 catalogue.

    python scripts/ship_task_costs.py [--seeds 0] [--out lopt/tasks/data/task_costs.json] [--force]

Draws ``lopt.tasks.taskset(seed=S).structures()`` for each seed with an empty cost cache and the
shipped costs ignored, so every candidate's cost is counted afresh by this code and this JAX, and
writes them all: with cost worker processes (two at least, ``LOPT_COST_WORKERS``), so that the
candidates a parallel draw estimates ahead of need are among them (:mod:`lopt.tasks.catalogue`;
a draw in one process counts only those it admits or rejects, ~10% fewer), and with :func:`lopt.tasks.cost_cache.shipped_fingerprint` (see that module's docs). Run it
after changing anything under ``lopt/tasks`` or ``lopt/flops.py``: the tests fail, naming this
script, while the shipped fingerprint differs from the code's. About 2 minutes per seed on the
2-core CPU (seconds with 16 cores: the draw counts in worker processes there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="catalogue seeds to ship (default 0)")
    parser.add_argument("--out", default=None, help="where to write (default: lopt's shipped file)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args()

    import jax

    import lopt
    from lopt import checkpoint
    from lopt.tasks import catalogue, cost_cache

    out = args.out or cost_cache.SHIPPED_COSTS
    if os.path.exists(out) and not args.force:
        parser.error(f"{out} exists; pass --force to replace it.")
    from lopt.tasks.cost_workers import WORKERS_ENV, worker_count

    if worker_count() < 2:
        os.environ[WORKERS_ENV] = "2"
    with tempfile.TemporaryDirectory() as folder:
        os.environ[cost_cache.COST_CACHE_ENV] = folder
        cost_cache.SHIPPED_COSTS = os.path.join(folder, "none.json")  # count everything afresh
        configs = {}
        prefetch = catalogue.prefetch_costs

        def recording(budget, items, **kwargs):  # the candidates' configs, stored to check the costs later
            configs.update({key: cfg for cfg, key in items})
            return prefetch(budget, items, **kwargs)

        catalogue.prefetch_costs = recording
        start = time.perf_counter()
        structures = sum(len(lopt.tasks.taskset(seed=seed).structures()) for seed in args.seeds)
        with open(cost_cache.cache_file(), encoding="utf-8") as f:
            costs = json.load(f)
    if any(v[1] is None for v in costs.values()) or set(costs) != set(configs):
        raise SystemExit("a candidate was costed without its FLOPs or its config; this is a bug")
    payload = {"format": cost_cache.SHIPPED_FORMAT, "code": cost_cache.shipped_fingerprint(), "jax": jax.__version__,
               "seeds": args.seeds, "costs": dict(sorted(costs.items())), "configs": dict(sorted(configs.items()))}
    text = json.dumps(payload, indent=0, sort_keys=True, default=dict) + "\n"  # nested TaskConfigs as dicts
    checkpoint.atomic_write(out, text.encode("utf-8"))  # an interrupted run leaves the old file whole
    print(f"{len(costs)} candidate costs of {structures} catalogue structures (seeds {args.seeds}) counted in "
          f"{time.perf_counter() - start:.0f} s; wrote {out} ({os.path.getsize(out) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
