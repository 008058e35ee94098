"""Per-family table: parameter counts over sampled configs and the default config's step time.

For every registered task family this prints (as a Markdown table):

* the min / median / max number of parameters over ``--configs`` sampled configs (seeds
  ``0..configs-1``; counted from shapes, nothing is run), and
* the time of one training step of the family's *default* config: a jitted function that draws
  a batch of the configured size and returns ``jax.value_and_grad(task.loss)``; the median over
  ``--repeats`` timed blocks of ``--steps`` calls after one compiling call.

Results also go to ``benchmarks/results/task_table_<device>.json``.

Usage: python benchmarks/task_table.py [--configs 50] [--steps 20] [--repeats 5] [--families mlp ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import lopt  # noqa: E402
from common import environment, save  # noqa: E402


def param_counts(name: str, num_configs: int) -> list[int]:
    """Parameter counts of the family's sampled configs for seeds ``0..num_configs-1``."""
    family = lopt.tasks.get(name)
    return [family.build(family.sample(seed)).num_params() for seed in range(num_configs)]


def step_time(task: lopt.tasks.Task, *, steps: int, repeats: int) -> tuple[float, float]:
    """Returns (compile + first call seconds, median seconds per loss+grad step)."""

    @jax.jit
    def step(task, params, key):
        return jax.value_and_grad(task.loss)(params, task.sample_batch(key, "train"))

    params = jax.jit(task.init)(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), steps)
    start = time.perf_counter()
    jax.block_until_ready(step(task, params, keys[0]))
    first = time.perf_counter() - start
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        for key in keys:
            out = step(task, params, key)
        jax.block_until_ready(out)
        per_step.append((time.perf_counter() - start) / steps)
    return first, statistics.median(per_step)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50, help="sampled configs per family")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
    parser.add_argument("--families", nargs="*", default=None, help="family names (default: all registered)")
    args = parser.parse_args(argv)
    for name in args.families or ():
        lopt.tasks.get(name)  # unknown names fail here, listing the valid ones

    rows = []
    for name in args.families or lopt.tasks.names():
        family = lopt.tasks.get(name)
        counts = param_counts(name, args.configs)
        default = family.default_config()
        task = family.build(default)
        first, per_step = step_time(task, steps=args.steps, repeats=args.repeats)
        rows.append({"family": name, "params_min": min(counts), "params_median": int(np.median(counts)),
                     "params_max": max(counts), "default_config": default.to_dict(),
                     "default_params": task.num_params(), "batch_size": task.spec.batch_size,
                     "compile_s": first, "step_ms": 1e3 * per_step})

    env = environment()
    print(f"{args.configs} sampled configs per family; step = jit(value_and_grad(loss)) on a fresh "
          f"batch, default config, median of {args.repeats} x {args.steps} steps; "
          f"jax {env['jax']} on {env['backend']} ({env['cpu_count']} CPUs), "
          f"load average {os.getloadavg()[0]:.1f}.\n")
    print("| family | params over sampled configs (min / median / max) | default config params "
          "| batch | compile (s) | step (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['family']}` | {r['params_min']:,} / {r['params_median']:,} / {r['params_max']:,} "
              f"| {r['default_params']:,} | {r['batch_size']} | {r['compile_s']:.2f} | {r['step_ms']:.3f} |")
    payload = {"configs": args.configs, "steps": args.steps, "repeats": args.repeats, "rows": rows}
    print(f"\nsaved {save('task_table', payload)}")
    return payload


if __name__ == "__main__":
    main()
