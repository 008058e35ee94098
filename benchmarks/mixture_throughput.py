"""Meta-training throughput on the whole task mixture vs one structure, measured in one run.

For the ``taskset`` preset (every structure in every outer gradient; default 16 buckets x 8
configs, PES, truncation 50) and for the single-structure ``canonical`` config with the same
learned optimizer, prints and saves: set-up seconds (task draws and per-structure normalisers;
on one device the bucket programs already compile meanwhile, in background threads), compile
seconds (what is left of compiling them once the set-up is done: set-up plus compile is the
time to the first outer step), inner steps per second (both
antithetic members counted) and achieved FLOP/s (FLOPs of the programs counted by
:mod:`lopt.flops`, which multiplies every scan body by its length, times outer steps per second;
XLA's cost analysis counts a loop body once, so its figure, kept in the JSON as
``xla_cost_analysis_flops_per_outer_step``, is low by the unroll length and, for recurrent tasks,
their sequence length too); then each structure's program alone (seconds per call,
its share of the summed time and its TFLOP/s), which shows what bounds the mixture's outer step.

Usage: python benchmarks/mixture_throughput.py [--buckets 16] [--configs 8] [--tasks 8]
       [--canonical-tasks 1024] [--steps 20] [--lopt nominal] [--structures campaign/state.json]
       [--no-canonical] [--out FILE]

The set-up reads the caches a repeat run on the same machine would: task costs
(:mod:`lopt.tasks.cost_cache`), the structures' normaliser fits (:mod:`lopt.meta.structure_fit_cache`;
``fits_from_cache`` in the JSON counts the pools read) and, when ``JAX_COMPILATION_CACHE_DIR`` is set,
XLA's programs. Point ``LOPT_CACHE_DIR`` and ``LOPT_COST_CACHE`` at empty folders to time a cold start.

``XLA_FLAGS`` in force are saved with the figures (e.g. to compare autotuning levels' compile
times: ``scripts/gpu_measurements.sh compile``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from common import default_path, refuse_existing_out, save

import lopt
from lopt.flops import jaxpr_flops, xla_cost_analysis_flops
from lopt.meta.trainer import MetaTrainer, inner_steps_per_outer_step


def _bucket_flops(engine) -> list[float]:
    """FLOPs of each bucket's estimate program, scan bodies times their lengths (:mod:`lopt.flops`),
    from the jaxprs the engine traced when it compiled them (or its program cache's records)."""
    counts = engine.program_flops()
    for i, c in enumerate(counts):
        if not c.exact:
            print(f"[mixture] bucket {i}: FLOPs are a lower bound ({c.unbounded_loops} while loops, "
                  f"opaque {c.opaque})", flush=True)
    return [c.flops for c in counts]


def per_structure(engine, theta, states, repeats: int, flops: list[float]) -> list[dict]:
    """Each bucket's compiled program run alone (``repeats`` calls, synchronised): seconds per call,
    FLOPs per call and the share of the summed time, to see which structure bounds the outer step.

    The outer step dispatches the programs one after another without synchronising, so the sum of
    these times is an upper bound on its time (the GPU may overlap the tail of one program with
    the start of the next).
    """
    theta = engine._replicate(theta)
    rows = []
    for i, (compiled, estimator, state) in enumerate(zip(engine._compiled, engine._placed, states)):
        key = engine._replicate(jax.random.key(1000 + i))
        jax.block_until_ready(compiled(estimator, theta, state, key))  # warm
        start = time.perf_counter()
        for r in range(repeats):
            _, state, metrics = compiled(estimator, theta, state, jax.random.fold_in(key, r))
        jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / repeats
        rows.append({"bucket": i, "family": engine.buckets[i].family, "seconds": seconds, "flops": flops[i],
                     "tflops": flops[i] / seconds / 1e12})
    total = sum(r["seconds"] for r in rows)
    for r in rows:
        r["share"] = r["seconds"] / total
    return rows


def measure_mixture(args, report) -> dict:
    """The mixture's figures; ``report(row)`` is called with what is known so far after the
    set-up and after compilation, so a run cut short still leaves those on disk."""
    sets = [f"task.num_buckets={args.buckets}", f"task.configs_per_bucket={args.configs}",
            f"estimator.num_tasks={args.tasks}", f"lopt.name={args.lopt}", "trainer.eval_every=0"]
    cfg = lopt.meta.load_config("taskset", sets + list(args.set))
    if args.structures:  # e.g. the campaign's fixed structures (skips drawing the taskset catalogue)
        with open(args.structures, encoding="utf-8") as f:
            data = json.load(f)
        cfg.task.structures = (data["structures"] if isinstance(data, dict) else data)[:args.buckets]
        cfg.task.num_buckets = len(cfg.task.structures)
    start = time.perf_counter()
    trainer = MetaTrainer(cfg, tempfile.mkdtemp(), progress=False)
    setup_s = time.perf_counter() - start
    engine = trainer.engine
    print(f"[mixture] set-up {setup_s:.1f} s ({len(engine.buckets)} structures)", flush=True)
    row = {"config": "taskset mixture", "buckets": len(engine.buckets), "configs_per_bucket": args.configs,
           "pairs_per_bucket": args.tasks, "setup_s": setup_s, "fits_from_cache": engine.fits_from_cache,
           "complete": False}
    if engine.prewarm_report is not None:  # set-up workers (lopt.meta.prewarm): how many, how long
        warmed = engine.prewarm_report
        row.update(prewarm_workers=warmed.workers, prewarm_failed=warmed.failed, prewarm_s=warmed.seconds,
                   prewarm_phases=list(warmed.phases))
    report(row)
    state = trainer.initial_state()
    theta, outer_state, states = state["theta"], state["outer_state"], state["estimator_state"]
    compile_s = engine.compile(theta, states, key=jax.random.key(0))
    bucket_flops = _bucket_flops(engine)
    flops, xla_flops = sum(bucket_flops), sum(xla_cost_analysis_flops(c) for c in engine._compiled)
    print(f"[mixture] compiled {len(engine._compiled)} programs in {compile_s:.1f} s; {flops:.3g} FLOPs/outer step",
          flush=True)
    row.update(compile_s=compile_s, flops_per_outer_step=flops, xla_cost_analysis_flops_per_outer_step=xla_flops)
    report(row)

    def step(theta, outer_state, states, i):
        grad, states, metrics = engine.estimate(theta, states, key=jax.random.key(i))
        theta, outer_state = trainer._apply_outer(theta, outer_state, grad, metrics["meta_loss"])
        return theta, outer_state, states, metrics

    theta, outer_state, states, metrics = step(theta, outer_state, states, 0)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(args.steps):
        theta, outer_state, states, metrics = step(theta, outer_state, states, i + 1)
    jax.block_until_ready((theta, metrics))
    seconds = (time.perf_counter() - start) / args.steps
    per_step = inner_steps_per_outer_step(trainer.setup)
    families = sorted({b.family for b in engine.buckets})
    structures = per_structure(engine, theta, states, max(1, args.steps // 4), bucket_flops)
    print(f"[mixture] per structure, run alone ({sum(r['seconds'] for r in structures):.4f} s summed, "
          f"{seconds:.4f} s per outer step):", flush=True)
    for r in sorted(structures, key=lambda r: -r["seconds"]):
        print(f"  {r['bucket']:>3} {r['family']:<26}{r['seconds'] * 1e3:>9.1f} ms{r['share']:>7.0%}"
              f"{r['tflops']:>8.2f} TFLOP/s", flush=True)
    row.update(structures=structures, families=families, seconds_per_outer_step=seconds,
               inner_steps_per_s=per_step / seconds, achieved_tflops=flops / seconds / 1e12,
               meta_loss=float(metrics["meta_loss"]), complete=True)
    return row


def measure_canonical(args) -> dict:
    cfg = lopt.meta.load_config("canonical", [f"estimator.num_tasks={args.canonical_tasks}", f"lopt.name={args.lopt}",
                                              "normalizer.enabled=false"])
    trainer = MetaTrainer(cfg, tempfile.mkdtemp(), progress=False)
    state = trainer.initial_state()
    theta, outer_state, est_state = state["theta"], state["outer_state"], state["estimator_state"]
    start = time.perf_counter()
    traced = trainer._outer_step.trace(trainer._estimator, theta, outer_state, est_state, jax.random.key(0))
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
    flops = jaxpr_flops(traced.jaxpr).flops
    xla_flops = xla_cost_analysis_flops(compiled)
    theta, outer_state, est_state, metrics = compiled(trainer._estimator, theta, outer_state, est_state,
                                                      jax.random.key(0))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(args.steps):
        theta, outer_state, est_state, metrics = compiled(trainer._estimator, theta, outer_state, est_state,
                                                          jax.random.key(i + 1))
    jax.block_until_ready((theta, metrics))
    seconds = (time.perf_counter() - start) / args.steps
    per_step = inner_steps_per_outer_step(trainer.setup)
    print(f"[canonical] compile {compile_s:.1f} s, {per_step / seconds:,.0f} inner steps/s, "
          f"{flops / seconds / 1e12:.2f} TFLOP/s", flush=True)
    return {"config": "canonical (one structure)", "pairs": args.canonical_tasks, "compile_s": compile_s,
            "seconds_per_outer_step": seconds, "inner_steps_per_s": per_step / seconds,
            "flops_per_outer_step": flops, "achieved_tflops": flops / seconds / 1e12,
            "xla_cost_analysis_flops_per_outer_step": xla_flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=8, help="PES pairs per bucket")
    parser.add_argument("--canonical-tasks", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lopt", default="nominal")
    parser.add_argument("--no-canonical", action="store_true",
                        help="measure the mixture only (e.g. to compare compile settings run after run)")
    parser.add_argument("--set", action="append", default=[], help="extra overrides of the taskset config")
    parser.add_argument("--structures", default="",
                        help="a JSON list of structures, or a campaign state.json (default: draw from the taskset)")
    parser.add_argument("--out", default=None,
                        help="where to write the JSON (default benchmarks/results/mixture_throughput_<device>.json); "
                             "written after each stage, so a run cut short keeps what it measured; must not exist")
    args = parser.parse_args()
    refuse_existing_out(parser, args.out)
    args.out = args.out or default_path("mixture_throughput")  # one new file for the partial and final writes
    # the engine's set-up and per-program compile times (pool builds, normaliser fits, lowering)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    logging.getLogger("lopt.meta").setLevel(logging.INFO)
    logging.getLogger("lopt.tasks").setLevel(logging.INFO)  # the catalogue draw's seconds
    rows = [] if args.no_canonical else [measure_canonical(args)]
    header = {"lopt": args.lopt, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if rows:
        path = save("mixture_throughput", {**header, "rows": rows}, args.out)
        print(f"[canonical] saved {path}", flush=True)

    def report(row):  # the mixture's figures so far, written over the previous partial save
        save("mixture_throughput", {**header, "rows": rows + [row]}, args.out)

    rows.append(measure_mixture(args, report))
    path = save("mixture_throughput", {**header, "rows": rows}, args.out)
    print(f"{'config':<28}{'setup s':>9}{'compile s':>11}{'s/outer step':>14}{'inner steps/s':>16}{'TFLOP/s':>9}")
    for r in rows:
        print(f"{r['config']:<28}{r.get('setup_s', float('nan')):>9.1f}{r['compile_s']:>11.1f}"
              f"{r['seconds_per_outer_step']:>14.4f}{r['inner_steps_per_s']:>16,.0f}{r['achieved_tflops']:>9.2f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
