"""Where a ``lopt.torch`` optimizer step spends its time: the kernels of a few profiled steps.

``torch_step.py`` times whole steps; this benchmark opens one up. It builds the same 8 dense
layers (``step_overhead.make_params``) as ``torch.nn.Parameter`` on the chosen device with fixed
random gradients, warms the optimizer up (with ``--compile``, that compiles), times ``--steps``
plain steps, then runs them again under ``torch.profiler`` and prints the operators and kernels
that took the most time (device time on CUDA, CPU time on the CPU), per step and as a share of
the profiled total (on CUDA only device work: kernels, copies, memsets; host operators are
credited with their kernels' time by the profiler and left out), and on CUDA how much of a step's
wall time the GPU is busy at all (the union of those kernels' intervals; the rest it waits for the
host to launch kernels). The JSON keeps every row.

``--arch pretrained`` is the shipped weights (``lopt.torch.LearnedOptimizer(params, "default")``,
the distance step and the anchored direction); ``nominal``, ``mlp`` and ``learnable_adam`` are the
architectures at their initial theta, as ``torch_step.py`` runs them.

Usage:
    python benchmarks/torch_profile.py --device cuda --size 1e8 --arch pretrained --compile
    python benchmarks/torch_profile.py --size 1e6 --arch nominal --threads 1     # CPU

Writes ``benchmarks/results/torch_profile_<device>_<arch>[_compile]_<jax device>.json`` without ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch

import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_step
from common import busy_ms, refuse_existing_out, save
from step_overhead import HORIZON, make_params
from torch_step import attach_grads, torch_params

import lopt.torch

ARCHS = ("pretrained", "nominal", "mlp", "learnable_adam")


def make_optimizer(arch: str, params: list[torch.Tensor], *, compile: bool) -> torch.optim.Optimizer:
    """The optimizer ``arch`` names over ``params``: ``pretrained`` is the shipped weights, the others
    as :func:`torch_step.make_optimizer` builds them (initial theta)."""
    if arch != "pretrained":
        return torch_step.make_optimizer(arch, params, compile=compile)
    return lopt.torch.LearnedOptimizer(params, "default", num_steps=HORIZON, **({"compile": True} if compile else {}))


def step_times(opt: torch.optim.Optimizer, device: torch.device, steps: int) -> list[float]:
    """Wall seconds of ``steps`` synchronised steps (:func:`torch_step.timed_step`)."""
    return [torch_step.timed_step(opt, device) for _ in range(steps)]


def _is_device_work(event) -> bool:
    """Whether a profiler event is work on the accelerator (a kernel, copy or memset), not a host
    operator (which the profiler also credits with its kernels' device time) nor an annotation."""
    return (event.device_type != torch.autograd.DeviceType.CPU
            and not getattr(event, "is_user_annotation", False)
            and not event.key.startswith(("Optimizer.", "ProfilerStep")))


def profile_rows(opt: torch.optim.Optimizer, device: torch.device, steps: int) -> tuple[list[dict], float]:
    """Profiled kernels (on the CPU: operators) of ``steps`` steps, most time first (ms per step),
    and the milliseconds per step the device is busy (on the CPU: the rows' total)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step_times(opt, device, steps)
    on_device = device.type == "cuda"
    rows = []
    for event in prof.key_averages():
        if on_device and not _is_device_work(event):
            continue
        own_us = event.self_device_time_total if on_device else event.self_cpu_time_total
        if own_us <= 0:
            continue
        rows.append({"name": event.key, "calls_per_step": event.count / steps, "ms_per_step": own_us / 1e3 / steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    total = sum(r["ms_per_step"] for r in rows)
    for r in rows:
        r["share"] = r["ms_per_step"] / total if total else 0.0
    if not on_device:
        return rows, total
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events() if _is_device_work(e)]
    return rows, busy_ms(spans) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=float, default=None, help="parameters (default 1e8 on CUDA, 1e6 on the CPU)")
    parser.add_argument("--arch", default="pretrained", choices=ARCHS)
    parser.add_argument("--compile", action="store_true", help="LearnedOptimizer(..., compile=True)")
    parser.add_argument("--steps", type=int, default=5, help="steps timed, then profiled")
    parser.add_argument("--top", type=int, default=20, help="rows printed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps {args.steps} and --top {args.top} must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device; run on a GPU machine or use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = int(args.size or (1e8 if device.type == "cuda" else 1e6))
    params = torch_params(make_params(size), device)
    attach_grads(params)
    opt = make_optimizer(args.arch, params, compile=args.compile)
    warm = time.perf_counter()
    step_times(opt, device, 3)
    warmup_s = time.perf_counter() - warm
    ms = 1e3 * statistics.median(step_times(opt, device, args.steps))
    rows, busy = profile_rows(opt, device, args.steps)
    n = sum(p.numel() for p in params)
    print(f"{args.arch}{' compiled' if args.compile else ''} on {device.type}, {n / 1e6:.1f}M params: "
          f"{ms:.2f} ms per step (warm-up {warmup_s:.1f} s); profiled, most {'device' if device.type == 'cuda' else 'CPU'}"
          " time first:")
    if device.type == "cuda":  # less than the step's wall time: the GPU waits for the host's launches
        print(f"the GPU is busy {busy:.2f} ms of each {ms:.2f} ms step ({busy / ms:.0%})")
    print(f"{'ms/step':>9} {'share':>6} {'calls':>6}  name")
    for r in rows[:args.top]:
        print(f"{r['ms_per_step']:9.3f} {r['share']:6.1%} {r['calls_per_step']:6.1f}  {r['name'][:110]}")
    name = f"torch_profile_{device.type}_{args.arch}{'_compile' if args.compile else ''}"
    path = save(name, {"device": str(device), "torch_device": torch.cuda.get_device_name(device)
                       if device.type == "cuda" else "cpu", "arch": args.arch, "compile": args.compile,
                       "n_params": n, "steps": args.steps, "ms_per_step": ms, "busy_ms_per_step": busy,
                       "warmup_s": warmup_s, "rows": rows},
                args.out)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
