"""Inner steps per second of meta-training on the canonical config (both antithetic members counted).

Canonical config: ``mlp`` learned optimizer (19 features, 2 hidden layers of 32), PES,
truncation 50, task MLP 64-32-10 relu on 8x8 Fashion-MNIST (digits if not installed), batch
128. Prints compile time (first outer step) and steady-state time per outer step, for lopt and
for the plain fused reference in ``plain_pes.py`` (same config, same machine, same run), and
saves the figures as JSON.

``--kernels xla auto`` measures lopt once per kernel mode (:mod:`lopt.kernels`; ``auto`` runs the
fused Pallas step of the ``mlp`` network on a GPU, under the estimator's vmap over tasks), each
row labelled with its mode.

On a CPU, lopt runs as ``lopt train`` does: one host device per core (``LOPT_HOST_DEVICES``,
:mod:`lopt.cli.host_devices`), its tasks split over them; the plain reference runs on the first.
``LOPT_HOST_DEVICES=1`` measures both on one device.

Usage: python benchmarks/meta_throughput.py [--tasks 16] [--steps 20] [--estimator pes]
       [--kernels xla [auto]] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
import jax_trace
from common import default_path, refuse_existing_out, save

import lopt
import lopt.kernels
from lopt.cli.host_devices import use_host_cores
from lopt.meta.trainer import MetaTrainer, inner_steps_per_outer_step


def measure(num_tasks: int, steps: int, estimator: str, unroll: int, kernel_mode: str = "xla",
            profile: bool = False) -> dict:
    with lopt.kernels.mode_scope(kernel_mode):  # the mode is read when the step is traced (its first call)
        row = _measure_lopt(num_tasks, steps, estimator, unroll, profile)
    return {**row, "kernels": kernel_mode}


def _profiled(row: dict, call, profile: bool) -> dict:
    """``row`` with the device-time breakdown of 5 more calls (jax_trace) when ``profile`` is set."""
    if not profile:
        return row
    summary = jax_trace.profile_calls(call, 5, tempfile.mkdtemp(prefix="lopt-meta-trace-"))
    jax_trace.print_summary(f"{row['tasks']} tasks, {row['estimator']}", summary)
    return {**row, "profile": summary}


def _measure_lopt(num_tasks: int, steps: int, estimator: str, unroll: int, profile: bool = False) -> dict:
    cfg = lopt.meta.load_config("canonical", [f"estimator.num_tasks={num_tasks}", f"estimator.kind={estimator}",
                                              f"estimator.unroll_length={unroll}", "normalizer.enabled=false"])
    trainer = MetaTrainer(cfg, "/tmp/lopt-bench-unused", progress=False)
    state = trainer.initial_state()
    theta, outer_state, est_state = state["theta"], state["outer_state"], state["estimator_state"]
    step_fn = trainer._outer_step
    start = time.perf_counter()
    theta, outer_state, est_state, metrics = step_fn(trainer._estimator, theta, outer_state, est_state,
                                                     jax.random.key(0))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        theta, outer_state, est_state, metrics = step_fn(trainer._estimator, theta, outer_state, est_state,
                                                         jax.random.key(i + 1))
    jax.block_until_ready((theta, metrics))
    per_step = (time.perf_counter() - start) / steps
    inner = inner_steps_per_outer_step(trainer.setup)
    row = {"tasks": num_tasks, "estimator": estimator, "unroll_length": unroll,
           "inner_steps_per_outer_step": inner, "compile_and_first_step_s": compile_s,
           "seconds_per_outer_step": per_step, "inner_steps_per_s": inner / per_step}
    # the profiled calls repeat one outer step's inputs: the same work, nothing carried between them
    return _profiled(row, lambda: step_fn(trainer._estimator, theta, outer_state, est_state, jax.random.key(0)),
                     profile)


def measure_plain(num_tasks: int, steps: int, unroll: int, profile: bool = False) -> dict:
    """The plain fused reference (benchmarks/plain_pes.py) on the same config, same machine."""
    import plain_pes  # here: importing it starts JAX, which must wait for use_host_cores

    x, y = plain_pes.fashion_arrays()
    outer_step, init_state = plain_pes.make_outer_step(x, y, num_tasks, unroll)
    theta = plain_pes.init_theta(jax.random.key(0))
    state = init_state(theta, jax.random.key(1))
    start = time.perf_counter()
    grad, state = outer_step(theta, state, jax.random.key(2))
    jax.block_until_ready(grad)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        grad, state = outer_step(theta, state, jax.random.key(i + 3))
    jax.block_until_ready(grad)
    per_step = (time.perf_counter() - start) / steps
    inner = 2 * num_tasks * unroll
    row = {"tasks": num_tasks, "estimator": "plain pes", "unroll_length": unroll, "inner_steps_per_outer_step": inner,
           "compile_and_first_step_s": compile_s, "seconds_per_outer_step": per_step,
           "inner_steps_per_s": inner / per_step}
    return _profiled(row, lambda: outer_step(theta, state, jax.random.key(2)), profile)


def _payload(rows: list) -> dict:
    return {"rows": rows, "local_devices": jax.local_device_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[16])
    parser.add_argument("--steps", type=int, default=20, help="timed outer steps after the first")
    parser.add_argument("--estimator", default="pes")
    parser.add_argument("--unroll", type=int, default=50)
    parser.add_argument("--kernels", nargs="+", default=["xla"], choices=["xla", "auto", "pallas"],
                        help="lopt's kernel modes to measure, one row each (lopt.kernels)")
    parser.add_argument("--out", default=None,
                        help="where to write the JSON (default benchmarks/results/meta_throughput_<device>.json); "
                             "written after every row, so a run cut short keeps what it measured; must not exist")
    parser.add_argument("--profile", action="store_true",
                        help="after timing each row at the largest task count, profile 5 more outer steps and print "
                             "(and save in the row) the device time per kernel (jax_trace.py)")
    args = parser.parse_args()
    refuse_existing_out(parser, args.out)
    args.out = args.out or default_path("meta_throughput")  # one new file for the partial and final writes
    use_host_cores()  # as `lopt train` does; before anything starts JAX
    rows = []
    for n in args.tasks:
        profile = args.profile and n == max(args.tasks)
        for mode in args.kernels:
            rows.append(measure(n, args.steps, args.estimator, args.unroll, mode, profile))
            save("meta_throughput", _payload(rows), args.out)
        if args.estimator == "pes":
            rows.append(measure_plain(n, args.steps, args.unroll, profile))
            save("meta_throughput", _payload(rows), args.out)
    print(f"device: {jax.devices()[0].device_kind} ({jax.local_device_count()} local devices)")
    print(f"{'tasks':>6} {'estimator':>10} {'kernels':>8} {'compile+1st (s)':>16} {'s/outer step':>13} "
          f"{'inner steps/s':>14}")
    for r in rows:
        print(f"{r['tasks']:>6} {r['estimator']:>10} {r.get('kernels', '-'):>8} {r['compile_and_first_step_s']:>16.2f} "
              f"{r['seconds_per_outer_step']:>13.4f} {r['inner_steps_per_s']:>14,.0f}")
    plain = {r["tasks"]: r for r in rows if r["estimator"] == "plain pes"}
    for r in rows:
        if r["estimator"] != "plain pes" and r["tasks"] in plain:
            print(f"{r['tasks']} tasks, kernels={r['kernels']}: lopt / plain = "
                  f"{r['inner_steps_per_s'] / plain[r['tasks']]['inner_steps_per_s']:.2f}")
    print("yardsticks (2-core CPU, 16 tasks): learned_optimization 3,850/s; plain fused JAX 3,850/s. "
          "H100: plain 645,000/s (128 tasks), 1,060,000/s (1024 tasks).")
    print(f"saved {save('meta_throughput', _payload(rows), args.out)}")


if __name__ == "__main__":
    main()
