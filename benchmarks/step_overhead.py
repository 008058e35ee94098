"""Time of one optimizer step for each learned optimizer against ``optax.adam``.

For each parameter count, params are 8 dense layers (square weight matrix + bias, float32),
grads are fixed random arrays, and one jitted step computes
``opt.update(grads, state, params, loss=...)`` and ``optax.apply_updates``, with params
and state donated (updated in place where the backend allows). theta is an argument of
the jitted step, as during meta-training. Reported per architecture and size:

* ``ms``: median wall time of one step (after compilation and warm-up);
* ``x_adam``: that time divided by ``optax.adam``'s at the same size (median over pairs
  of calls alternating Adam and the architecture, so a busy machine slows both alike);
* ``state_bytes_per_param``: bytes of optimizer state / number of parameters (measured);
* ``flops_per_param``: the architecture's own FLOP estimate per parameter per step;
* ``gflops``: ``flops_per_param * n / time`` (the per-parameter network's achieved rate);
* ``compile_s``: compilation time of the step.

Usage:
    python benchmarks/step_overhead.py --sizes 1e6 1e7            # CPU
    python benchmarks/step_overhead.py --sizes 1e7 1e8            # GPU (H100)
    python benchmarks/step_overhead.py --sizes 1e6 --archs adam mlp

Writes ``benchmarks/results/step_overhead_<device>.json`` (see ``common.save``); pass
``--out`` for another path. An architecture that fails at a size (e.g. out of memory) is
recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from common import default_path, environment, refuse_existing_out

import lopt.learned
import lopt.pretrained

NUM_LAYERS = 8
HORIZON = 10_000


def make_params(n: int) -> dict:
    """8 layers of a d x d weight and a d bias, with 8 * (d*d + d) ~= n."""
    d = max(1, round((-1 + math.sqrt(1 + 4 * n / NUM_LAYERS)) / 2))
    rng = np.random.default_rng(0)
    return {
        f"layer{i}": {
            "w": jnp.asarray(rng.standard_normal((d, d), np.float32) / math.sqrt(d)),
            "b": jnp.zeros((d,), jnp.float32),
        }
        for i in range(NUM_LAYERS)
    }


def available_bytes() -> float:
    """Free host memory (Linux ``MemAvailable``); ``inf`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


class Stepper:
    """One compiled optimizer step for ``arch`` on ``params``; ``run()`` times one call."""

    def __init__(self, arch: str, params: dict, grads: dict):
        n = sum(x.size for x in jax.tree.leaves(params))
        if arch == "adam":
            theta, flops, state_per_param = {}, 12.0, 8

            def build(theta):
                del theta
                return optax.adam(1e-3)
        else:
            if arch == "pretrained":  # the shipped weights, with their own config
                theta, lo = lopt.pretrained.load()
            else:
                lo = lopt.learned.get(arch)
                theta = lo.init(jax.random.key(0))
            flops, state_per_param = float(lo.flops_per_param()), lo.state_bytes_per_param()

            def build(theta):
                return lo.optimizer(theta, num_steps=HORIZON)

        if jax.devices()[0].platform == "cpu":
            # The step holds the old and new state and temporaries of about the same size:
            # refuse rather than push a shared machine into swapping or the OOM killer.
            need = 5 * state_per_param * n + 6 * 4 * n
            if need > 0.8 * available_bytes():
                raise MemoryError(
                    f"needs about {need / 2**30:.1f} GiB, "
                    f"{available_bytes() / 2**30:.1f} GiB available"
                )
        state = build(theta).init(params)
        donate = (0, 1) if jax.devices()[0].platform != "cpu" else ()

        def step(params, state, theta, grads, loss):
            opt = build(theta)
            updates, state = opt.update(grads, state, params, loss=loss)
            return optax.apply_updates(params, updates), state

        loss = jnp.asarray(1.0, jnp.float32)
        start = time.perf_counter()
        jitted = jax.jit(step, donate_argnums=donate)
        self.compiled = jitted.lower(params, state, theta, grads, loss).compile()
        self.compile_s = time.perf_counter() - start
        self.args = (theta, grads, loss)
        self.p = jax.tree.map(jnp.copy, params) if donate else params
        self.s = state  # donated: its buffers belong to this stepper
        self.info = {
            "arch": arch,
            "n_params": n,
            "state_bytes_per_param": tree_bytes(state) / n,
            "flops_per_param": flops,
            "compile_s": self.compile_s,
        }

    def run(self) -> float:
        t = time.perf_counter()
        self.p, self.s = self.compiled(self.p, self.s, *self.args)
        jax.block_until_ready((self.p, self.s))
        return time.perf_counter() - t

    def finite(self) -> bool:
        return bool(all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(self.p)))


def bench_one(arch: str, adam: Stepper, params, grads, *, repeats: int, warmup: int) -> dict:
    """Times ``arch`` interleaved with Adam (A, B, A, B...), robust to a busy machine."""
    stepper = adam if arch == "adam" else Stepper(arch, params, grads)
    per_call = max(stepper.run() for _ in range(max(warmup, 1)))
    # Slow steps get fewer repeats (at least 3), so one size takes at most ~30 s per arch.
    repeats = max(3, min(repeats, int(30.0 / max(per_call, 1e-9))))
    times, adam_times = [], []
    for _ in range(repeats):
        adam_times.append(adam.run())
        times.append(stepper.run())
    ms = 1e3 * statistics.median(times)
    return {
        **stepper.info,
        "ms": ms,
        "ms_min": 1e3 * min(times),
        "adam_ms": 1e3 * statistics.median(adam_times),
        "x_adam": statistics.median([t / a for t, a in zip(times, adam_times)]),
        "gflops": stepper.info["flops_per_param"] * stepper.info["n_params"] / (ms * 1e-3) / 1e9,
        "repeats": repeats,
        "finite": stepper.finite(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument(
        "--archs",
        nargs="+",
        default=[
            "adam",
            "learnable_sgdm",
            "learnable_adam",
            "mlp",
            "hyper",
            "hierarchical",
            "lstm",
        ],
        help="'adam' (optax.adam baseline), 'pretrained' (the shipped weights) and/or registry names",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--out", default=None, help="JSON path (default: results/step_overhead_<device>.json)"
    )
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    args.out = args.out or default_path("step_overhead")  # one new file for the partial and final writes
    archs = list(dict.fromkeys(["adam", *args.archs]))  # adam first: the reference

    payload = {
        "benchmark": "step_overhead",
        "layers": NUM_LAYERS,
        "horizon": HORIZON,
        "repeats": args.repeats,
        "results": [],
    }

    def write() -> str:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"environment": environment(), **payload}, f, indent=2)
        return args.out

    results = payload["results"]
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), jax {jax.__version__}"
    )
    for size in args.sizes:
        params = make_params(int(size))
        leaves, treedef = jax.tree.flatten(params)
        rng = np.random.default_rng(1)
        grads = treedef.unflatten(
            [jnp.asarray(rng.standard_normal(x.shape, np.float32)) for x in leaves]
        )
        n = sum(x.size for x in jax.tree.leaves(params))
        adam = Stepper("adam", params, grads)
        print(f"\n{n / 1e6:.2f}M params ({NUM_LAYERS} layers)")
        print(
            f"{'arch':>16} {'ms/step':>10} {'x adam':>8} {'state B/param':>14} "
            f"{'FLOPs/param':>12} {'GFLOP/s':>9} {'compile s':>10}"
        )
        for arch in archs:
            try:
                r = bench_one(arch, adam, params, grads, repeats=args.repeats, warmup=args.warmup)
            except Exception as e:  # noqa: BLE001 - record and continue (e.g. out of memory)
                r = {"arch": arch, "n_params": n, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"{arch:>16} failed: {r['error']}")
                results.append(r)
                write()
                continue
            results.append(r)
            print(
                f"{arch:>16} {r['ms']:>10.3f} {r['x_adam']:>8.1f} {r['state_bytes_per_param']:>14.1f} "
                f"{r['flops_per_param']:>12.0f} {r['gflops']:>9.1f} {r['compile_s']:>10.1f}"
            )
            write()  # after every measurement, so an interrupted run keeps what it had
            jax.clear_caches()

    path = write()
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
