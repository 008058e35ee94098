"""Compile time of the meta-training programs, one structure at a time.

The mixture engine compiles one PES program per structure (bucket) before the first outer
step. On a GPU that compilation, not the training, was what a 10-minute session could not get
through, so this script measures it piece by piece: for each structure, the seconds to trace and
lower the PES estimate program, the size of the lowered program (StableHLO characters and
operations), and the seconds XLA takes to compile it, one structure after another (no
threads, so each figure is that structure's own cost). Set ``XLA_FLAGS`` (e.g.
``--xla_gpu_autotune_level=0``) or ``--cache DIR`` (JAX's persistent compilation cache) to
compare.

Each row also counts the traced program's equations (``jaxpr_eqns``, inside every nested
program), the lines of XLA's optimized HLO (``optimized_hlo_lines``) and, with ``--sources N``,
the N lopt functions that traced the most equations: what makes one structure's program larger
than another's.

Usage: python benchmarks/compile_time.py [--structures campaign/state.json | --taskset 16]
       [--indices 2 14] [--lopt nominal] [--lopt-config JSON] [--unroll 20] [--tasks 8]
       [--configs 4] [--families char_rnn_lm mlp ...] [--sources 10] [--cache DIR]
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


def count_equations(jaxpr, by_source: dict) -> int:
    """Equations of ``jaxpr`` and every program nested in it; ``by_source`` counts the leaf
    equations per lopt function that traced them (``file:function``, ``?`` outside lopt)."""
    total = 0
    for eqn in jaxpr.eqns:
        inner = list(jax.extend.core.jaxprs_in_params(eqn.params))  # scan, cond, pjit, custom_jvp, ...
        total += 1 + sum(count_equations(j, by_source) for j in inner)
        if not inner:
            frames = [f for f in (eqn.source_info.traceback.frames if eqn.source_info.traceback else [])
                      if "/lopt/" in f.file_name]
            where = f"{frames[0].file_name.split('/lopt/')[-1]}:{frames[0].function_name}" if frames else "?"
            by_source[where] = by_source.get(where, 0) + 1
    return total


def measure_structure(lopt_, structure: dict, *, unroll: int, tasks: int, configs: int, max_horizon: int,
                      sources: int = 0) -> dict:
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
    traced = jax.jit(_estimate).trace(estimator, theta, state, jax.random.key(2))
    lowered = traced.lower()
    lower_s = time.perf_counter() - start
    by_source: dict[str, int] = {}
    eqns = count_equations(traced.jaxpr.jaxpr, by_source)
    text = lowered.as_text()
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(estimator, theta, state, jax.random.key(3)))
    first_run_s = time.perf_counter() - start
    return {"family": base_family(config), "build_s": build_s, "lower_s": lower_s, "compile_s": compile_s,
            "first_run_s": first_run_s, "stablehlo_chars": len(text),
            "stablehlo_ops": sum(1 for line in text.splitlines() if " = " in line),
            "jaxpr_eqns": eqns, "optimized_hlo_lines": compiled.as_text().count("\n"),
            "leaves": len(jax.tree.leaves(jax.eval_shape(lopt.tasks.build(config).init, jax.random.key(0)))),
            "top_sources": dict(sorted(by_source.items(), key=lambda kv: -kv[1])[:sources])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--structures", default="campaign/state.json")
    parser.add_argument("--taskset", type=int, default=0,
                        help="instead of --structures: the taskset preset's first N drawn structures (seed 0)")
    parser.add_argument("--indices", type=int, nargs="*", default=None, help="keep these structures (0-based)")
    parser.add_argument("--sources", type=int, default=0, help="list the N lopt functions tracing the most")
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
    if args.taskset:
        from lopt.meta.trainer import _mixture_structures

        cfg = lopt.meta.load_config("taskset", [f"task.num_buckets={args.taskset}"])
        structures = [s.to_dict() for s in _mixture_structures(cfg)[1]]
    else:
        with open(args.structures, encoding="utf-8") as f:
            data = json.load(f)
        structures = data["structures"] if isinstance(data, dict) else data
    if args.indices is not None:
        bad = [i for i in args.indices if not 0 <= i < len(structures)]
        if bad:
            parser.error(f"--indices {bad}: there are {len(structures)} structures (0..{len(structures) - 1})")
        structures = [structures[i] for i in args.indices]
    if args.families:
        structures = [s for s in structures if base_family(TaskConfig(s)) in args.families]
    lopt_ = lopt.learned.get(args.lopt, **json.loads(args.lopt_config))
    rows = []
    for structure in structures:
        row = measure_structure(lopt_, structure, unroll=args.unroll, tasks=args.tasks, configs=args.configs,
                                max_horizon=args.max_horizon, sources=args.sources)
        rows.append(row)
        print(f"[compile] {row['family']:24s} {row['leaves']:3d} tensors  build {row['build_s']:6.1f} s  "
              f"lower {row['lower_s']:6.1f} s  compile {row['compile_s']:7.1f} s  first run "
              f"{row['first_run_s']:5.1f} s  {row['stablehlo_ops']:7d} ops  {row['jaxpr_eqns']:6d} equations  "
              f"{row['optimized_hlo_lines']:7d} optimized HLO lines", flush=True)
        for where, n in row["top_sources"].items():
            print(f"            {n:6d}  {where}")
    total = sum(r["compile_s"] + r["lower_s"] for r in rows)
    print(f"[compile] total lower + compile: {total:.1f} s over {len(rows)} structures "
          f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, cache={args.cache!r})", flush=True)
    save(f"compile_time{args.tag}", {"environment": environment(), "args": vars(args),
                                      "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows,
                                      "total_lower_compile_s": total})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
