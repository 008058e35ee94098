"""Per-family table: parameter counts over sampled configs and the default config's step time.

For every registered task family this prints (as a Markdown table):

* the min / median / max number of parameters over ``--configs`` sampled configs (seeds
  ``0..configs-1``; counted from shapes, nothing is run), and
* the time of one training step of the family's *default* config: a jitted function that draws
  a batch of the configured size and returns ``jax.value_and_grad(task.loss)``; the median over
  ``--repeats`` timed blocks of ``--steps`` calls after one compiling call; and XLA's FLOP
  estimate of that step (``lopt.tasks.estimate_cost``).

Results also go to ``benchmarks/results/task_table_<device>.json``.

With ``--taskset`` it also prints the default ``lopt.tasks.taskset()`` distribution: structures
and distinct configs per family, and the compile arithmetic of a meta-training run over its
buckets (``--buckets``, ``--per-bucket``, ``--outer-steps``).

Usage: python benchmarks/task_table.py [--configs 50] [--steps 20] [--repeats 5] [--families mlp ...] [--taskset]
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
from common import environment, save

import lopt


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


def taskset_summary(buckets: int, per_bucket: int, outer_steps: int) -> dict:
    """Prints and returns the default taskset's structures, distinct configs and compile arithmetic."""
    start = time.perf_counter()
    dist = lopt.tasks.taskset()
    summary = dist.summary()
    summary["catalogue_seconds"] = time.perf_counter() - start
    summary["budget"] = repr(dist.budget)
    buckets = min(buckets, summary["structures"])
    summary["run"] = {"outer_steps": outer_steps, "buckets": buckets, "configs_per_bucket": per_bucket,
                      "compiles": buckets, "configs_fixed_buckets": buckets * per_bucket,
                      "configs_redrawn_variants": min(outer_steps * per_bucket, summary["configs"])}
    print(f"\nDefault taskset ({summary['budget']}; catalogue drawn in {summary['catalogue_seconds']:.0f} s):\n")
    print("| family | structures | distinct configs |")
    print("|---|---|---|")
    for name, row in summary["families"].items():
        print(f"| `{name}` | {row['structures']} | {row['configs']:,} |")
    print(f"| **total** | {summary['structures']} | {summary['configs']:,} |")
    run = summary["run"]
    print(f"\nA {outer_steps:,}-outer-step run cycling over {buckets} buckets of {per_bucket} configs compiles "
          f"{buckets} programs; it trains on {run['configs_fixed_buckets']:,} distinct configs with fixed buckets, "
          f"up to {run['configs_redrawn_variants']:,} when each bucket's variants are re-drawn as it comes round.")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50, help="sampled configs per family")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
    parser.add_argument("--families", nargs="*", default=None, help="family names (default: all registered)")
    parser.add_argument("--taskset", action="store_true", help="also summarise the default taskset distribution")
    parser.add_argument("--buckets", type=int, default=16, help="buckets of the meta-training run (--taskset)")
    parser.add_argument("--per-bucket", type=int, default=8, help="configs per bucket (--taskset)")
    parser.add_argument("--outer-steps", type=int, default=1000, help="outer steps of the run (--taskset)")
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
                     "compile_s": first, "step_ms": 1e3 * per_step,
                     "default_flops": lopt.tasks.estimate_cost(task).flops})

    env = environment()
    print(f"{args.configs} sampled configs per family; step = jit(value_and_grad(loss)) on a fresh "
          f"batch, default config, median of {args.repeats} x {args.steps} steps; "
          f"jax {env['jax']} on {env['backend']} ({env['cpu_count']} CPUs), "
          f"load average {os.getloadavg()[0]:.1f}.\n")
    print("| family | params over sampled configs (min / median / max) | default config params "
          "| batch | FLOPs / step | compile (s) | step (ms) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        flops = "n/a" if r["default_flops"] is None else f"{r['default_flops']:.3g}"
        print(f"| `{r['family']}` | {r['params_min']:,} / {r['params_median']:,} / {r['params_max']:,} "
              f"| {r['default_params']:,} | {r['batch_size']} | {flops} | {r['compile_s']:.2f} "
              f"| {r['step_ms']:.3f} |")
    payload = {"configs": args.configs, "steps": args.steps, "repeats": args.repeats, "rows": rows}
    if args.taskset:
        payload["taskset"] = taskset_summary(args.buckets, args.per_bucket, args.outer_steps)
    print(f"\nsaved {save('task_table', payload)}")
    return payload


if __name__ == "__main__":
    main()
