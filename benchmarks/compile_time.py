"""Compile time of the meta-training programs, one structure at a time.

The mixture engine compiles one PES program per structure (bucket) before the first outer
step. On a GPU that compilation, not the training, was what a 10-minute session could not get
through, so this script measures it piece by piece: for each structure, the seconds to trace and
lower the PES estimate program, the size of the lowered program (StableHLO characters and
operations), and the seconds XLA takes to compile it, one structure after another (no
threads, so each figure is that structure's own cost). Set ``XLA_FLAGS`` (e.g.
``--xla_gpu_autotune_level=0``) or ``--cache DIR`` (JAX's persistent compilation cache) to
compare.

Usage: python benchmarks/compile_time.py [--structures campaign/state.json] [--lopt nominal]
       [--lopt-config JSON] [--unroll 20] [--tasks 8] [--configs 4] [--families char_rnn_lm mlp ...]
       [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, save

import lopt
from lopt.meta.estimators import PES
from lopt.meta.mixture_engine import _estimate
from lopt.meta.problem import make_problem
from lopt.meta.truncation import LogUniformHorizon
from lopt.tasks import TaskConfig
from lopt.tasks.mixture import base_family


def measure_structure(lopt_, structure: dict, *, unroll: int, tasks: int, configs: int, max_horizon: int) -> dict:
    """Lowering and compile seconds and program size of one structure's PES program."""
    config = TaskConfig(structure)
    start = time.perf_counter()
    problem = make_problem(lopt_, [config] * configs, truncation=LogUniformHorizon(100, max_horizon),
                           unroll_length=unroll)
    estimator = PES(problem, num_tasks=tasks, std=0.01)
    theta = lopt_.init(jax.random.key(0))
    state = jax.jit(lambda e, t, k: e.init(t, key=k))(estimator, theta, jax.random.key(1))
    jax.block_until_ready(state)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    lowered = jax.jit(_estimate).lower(estimator, theta, state, jax.random.key(2))
    lower_s = time.perf_counter() - start
    text = lowered.as_text()
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(estimator, theta, state, jax.random.key(3)))
    first_run_s = time.perf_counter() - start
    return {"family": base_family(config), "build_s": build_s, "lower_s": lower_s, "compile_s": compile_s,
            "first_run_s": first_run_s, "stablehlo_chars": len(text),
            "stablehlo_ops": sum(1 for line in text.splitlines() if " = " in line)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--structures", default="campaign/state.json")
    parser.add_argument("--lopt", default="nominal")
    parser.add_argument("--lopt-config", default="{}", help='the learned optimizer\'s config as JSON, e.g. '
                        '\'{"concatenate_tensors": true}\'')
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--max-horizon", type=int, default=2000)
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--cache", default=None, help="JAX persistent compilation cache folder")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    with open(args.structures, encoding="utf-8") as f:
        data = json.load(f)
    structures = data["structures"] if isinstance(data, dict) else data
    if args.families:
        structures = [s for s in structures if base_family(TaskConfig(s)) in args.families]
    lopt_ = lopt.learned.get(args.lopt, **json.loads(args.lopt_config))
    rows = []
    for structure in structures:
        row = measure_structure(lopt_, structure, unroll=args.unroll, tasks=args.tasks, configs=args.configs,
                                max_horizon=args.max_horizon)
        rows.append(row)
        print(f"[compile] {row['family']:24s} build {row['build_s']:6.1f} s  lower {row['lower_s']:6.1f} s  "
              f"compile {row['compile_s']:7.1f} s  first run {row['first_run_s']:5.1f} s  "
              f"{row['stablehlo_ops']:7d} ops", flush=True)
    total = sum(r["compile_s"] + r["lower_s"] for r in rows)
    print(f"[compile] total lower + compile: {total:.1f} s over {len(rows)} structures "
          f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, cache={args.cache!r})", flush=True)
    save(f"compile_time{args.tag}", {"environment": environment(), "args": vars(args),
                                      "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows,
                                      "total_lower_compile_s": total})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
