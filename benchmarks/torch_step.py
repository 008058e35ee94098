"""Time of one ``lopt.torch`` optimizer step against ``torch.optim.AdamW``, next to JAX's.

Params are ``step_overhead.make_params``'s 8 dense layers (d x d weight + d bias, float32) as
``torch.nn.Parameter`` on the chosen device, with fixed random gradients. For each size and
architecture it reports:

* ``ms``: median wall time of one ``opt.step()`` (after warm-up; CUDA synchronised);
* ``x_adamw``: median ratio to ``torch.optim.AdamW`` (foreach; ``fused=True`` on CUDA) timed
  in alternation with it, so a busy machine slows both alike;
* ``jax_ms``: the same architecture's jitted JAX step at the same size (``step_overhead.Stepper``,
  same process), unless ``--no-jax``;
* ``bound_ms``: the memory-bandwidth bound: the bytes a step must move (read params, grads
  and state, write params and state) over the device's measured copy bandwidth
  (``copy_gbs``, a large ``Tensor.copy_``); ``x_bound = ms / bound_ms``.

Usage:
    python benchmarks/torch_step.py --threads 1              # CPU, 1e6 and 1e7 params
    python benchmarks/torch_step.py --device cuda --sizes 1e7 1e8
    python benchmarks/torch_step.py --device cuda --sizes 1e7 1e8 --compile --no-jax
    python benchmarks/torch_step.py --threads 1 --no-jax --cpu-time --out X.json  # loaded CPU
    python benchmarks/torch_step.py --archs nominal mlp --state-dtype bfloat16   # bfloat16 state

Writes ``benchmarks/results/torch_step_<device>.json`` (``..._compile.json`` with ``--compile``,
``..._bf16_state.json`` with ``--state-dtype bfloat16``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS_DIR, environment, free_path, refuse_existing_out
from step_overhead import HORIZON, Stepper, available_bytes, make_params

import lopt.learned
import lopt.torch

ARCHS = ("learnable_adam", "nominal", "mlp")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Achieved copy bandwidth (bytes read + written per second) of a large ``copy_``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def torch_params(jax_params: dict, device: torch.device) -> list[torch.Tensor]:
    leaves = jax.tree.leaves(jax_params)
    return [torch.nn.Parameter(torch.from_numpy(np.array(x)).to(device)) for x in leaves]


def attach_grads(params: list[torch.Tensor], seed: int = 1) -> None:
    g = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device=p.device) * 1e-2


def make_optimizer(
    arch: str, params: list[torch.Tensor], *, compile: bool = False, state_dtype: str = "float32"
) -> torch.optim.Optimizer:
    if arch == "adamw":
        fused = params[0].device.type == "cuda"
        return torch.optim.AdamW(params, lr=1e-3, fused=fused, foreach=None if fused else True)
    lo = lopt.learned.get(arch)
    return lopt.torch.LearnedOptimizer(
        params,
        (lo.init(jax.random.key(0)), lo),
        num_steps=HORIZON,
        **({"compile": True} if compile else {}),  # runs against older lopt.torch trees too
        **({"state_dtype": state_dtype} if state_dtype != "float32" else {}),
    )


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


#: Clock of timed_step: wall time, or this process's CPU time with --cpu-time (steadier than
#: wall time on a CPU shared with other jobs; meaningless for CUDA, where the GPU does the work).
clock = time.perf_counter


def timed_step(opt: torch.optim.Optimizer, device: torch.device) -> float:
    sync(device)
    t = clock()
    opt.step()
    sync(device)
    return clock() - t


def bench_size(
    n: int, device: torch.device, archs, *, repeats: int, jax_too: bool, bw: float, compile: bool,
    state_dtype: str = "float32",
):
    jax_params = make_params(n)
    n_real = sum(x.size for x in jax.tree.leaves(jax_params))
    adam_params = torch_params(jax_params, device)
    attach_grads(adam_params)
    adamw = make_optimizer("adamw", adam_params)
    for _ in range(3):
        timed_step(adamw, device)
    rows = []
    for arch in ("adamw", *archs):
        row = {"arch": arch, "n_params": n_real}
        try:
            params = adam_params if arch == "adamw" else torch_params(jax_params, device)
            if arch != "adamw":
                attach_grads(params)
            opt = adamw if arch == "adamw" else make_optimizer(arch, params, compile=compile, state_dtype=state_dtype)
            warmup = time.perf_counter()
            for _ in range(3):  # with --compile: compiles here
                timed_step(opt, device)
            if arch != "adamw":
                row["compile"] = compile
                row["state_dtype"] = state_dtype
                row["warmup_s"] = time.perf_counter() - warmup
            times, ratios = [], []
            for _ in range(repeats):
                a = timed_step(adamw, device)
                t = a if arch == "adamw" else timed_step(opt, device)
                times.append(t)
                ratios.append(t / a)
            sb = state_bytes(opt) / n_real
            bytes_per_param = 4 + 4 + 2 * sb + 4  # read p, g, state; write p, state
            row.update(
                ms=1e3 * statistics.median(times),
                x_adamw=statistics.median(ratios),
                state_bytes_per_param=sb,
                bound_ms=1e3 * bytes_per_param * n_real / bw,
                finite=bool(all(torch.isfinite(p).all() for p in params)),
            )
            row["x_bound"] = row["ms"] / row["bound_ms"]
            if jax_too and arch != "adamw" and state_dtype == "float32" and device.type == jax.devices()[0].platform.replace(
                "gpu", "cuda"
            ):
                grads = jax.tree.map(lambda x: x * 0 + 1e-2, jax_params)
                stepper = Stepper(arch, jax_params, grads)
                stepper.run()
                row["jax_ms"] = 1e3 * statistics.median(stepper.run() for _ in range(repeats))
        except (RuntimeError, MemoryError) as e:  # out of memory: record and go on
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        print(json.dumps(row))
        rows.append(row)
        if arch != "adamw":
            del params, opt
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=lopt.torch.names())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX step figures")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 on a shared machine: OpenMP barriers stall)")
    parser.add_argument("--compile", action="store_true",
                        help="LearnedOptimizer(..., compile=True) (torch.compile; warm-up compiles)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps in process CPU time (CPU only; for a loaded machine)")
    parser.add_argument("--state-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the learned optimizers' state dtype (bfloat16: nominal and mlp only; "
                             "the JAX figure is then not taken)")
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    if args.state_dtype != "float32" and not set(args.archs) <= {"nominal", "mlp"}:
        parser.error(f"--state-dtype {args.state_dtype} applies to nominal and mlp only; pass --archs nominal mlp")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.cpu_time:
        if device.type != "cpu":
            parser.error("--cpu-time measures the CPU's work: use it with --device cpu")
        global clock
        clock = time.process_time
    if device.type == "cpu" and 40 * max(args.sizes) * 4 > 0.8 * available_bytes():
        print("not enough free memory for the largest size", file=sys.stderr)
        return 1
    bw = copy_bandwidth(device)
    tag = "cpu" if device.type == "cpu" else f"cuda-{torch.cuda.get_device_name(device).replace(' ', '_')}"
    payload = {
        "environment": {**environment(), "torch": torch.__version__, "torch_device": tag,
                        "torch_threads": torch.get_num_threads()},
        "copy_gbs": bw / 1e9,
        "clock": "process_time" if args.cpu_time else "perf_counter",
        "results": [],
    }
    print(f"device {tag}, measured copy bandwidth {bw / 1e9:.1f} GB/s")
    for n in args.sizes:
        payload["results"] += bench_size(int(n), device, args.archs, repeats=args.repeats,
                                         jax_too=not args.no_jax, bw=bw, compile=args.compile,
                                         state_dtype=args.state_dtype)
    suffix = ("_compile" if args.compile else "") + ("_bf16_state" if args.state_dtype == "bfloat16" else "")
    path = args.out or free_path(os.path.join(RESULTS_DIR, f"torch_step_{tag}{suffix}.json"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
