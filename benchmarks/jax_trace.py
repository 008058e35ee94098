"""Where a jitted JAX step spends its device time: profile a few calls, sum the kernels by name.

``profile_calls(fn, calls, log_dir)`` runs ``fn`` ``calls`` times under ``jax.profiler`` with a
Perfetto trace, and :func:`summarise` reads that trace back: the device's kernel events (processes
named ``/device:...``; on a CPU, where there is no device process, the XLA client's threads),
summed per kernel name and per call, and how much of the traced span the device was busy (the
union of its kernel intervals, so kernels overlapping on several streams count once).

Used by ``meta_throughput.py --profile``; the PyTorch counterpart is ``torch_profile.py``.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    >>> x = jnp.ones((64, 64)); _ = f(x).block_until_ready()
    >>> s = profile_calls(lambda: f(x), 2, tempfile.mkdtemp())
    >>> s["calls"], s["busy_ms_per_call"] > 0
    (2, True)
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import sys
from collections.abc import Callable

import jax

sys.path.insert(0, os.path.dirname(__file__))
from common import busy_ms

# events on XLA's CPU threads that wrap or wait for the program's own operations
_CPU_BOOKKEEPING = ("$", "ThunkExecutor", "Wait", "Rendezvous", "ThreadpoolListener", "SlinkyThreadPool")


def profile_calls(fn: Callable[[], object], calls: int, log_dir: str, *, top: int = 20) -> dict:
    """Runs ``fn`` ``calls`` times (already compiled) under the profiler; :func:`summarise` of the trace."""
    if calls < 1:
        raise ValueError(f"profile_calls: calls={calls!r} must be at least 1.")
    jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
    try:
        out = None
        for _ in range(calls):
            out = fn()
        jax.block_until_ready(out)
    finally:
        jax.profiler.stop_trace()
    traces = sorted(glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")),
                    key=os.path.getmtime)
    if not traces:
        raise RuntimeError(f"profile_calls: the profiler wrote no perfetto_trace.json.gz under {log_dir!r}.")
    return summarise(traces[-1], calls, top=top)


def summarise(trace_path: str, calls: int, *, top: int = 20) -> dict:
    """Kernel time per name and device busy time, per call, from a Perfetto trace (``.json.gz``).

    Args:
        trace_path: ``perfetto_trace.json.gz`` written by ``jax.profiler`` (``create_perfetto_trace``).
        calls: how many calls the trace holds (the sums are divided by it).
        top: how many kernel names to list (the rest are summed as one row).

    Returns:
        ``{"calls", "device_processes", "kernel_ms_per_call", "busy_ms_per_call", "span_ms_per_call",
        "busy_fraction", "kernels": [{"name", "ms_per_call", "share", "count_per_call"}, ...]}``.
    """
    with gzip.open(trace_path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    device_pids = {pid for pid, name in processes.items() if name.startswith("/device:")}
    if device_pids:
        kernels = [e for e in events if e.get("ph") == "X" and e["pid"] in device_pids]
    else:  # a CPU backend: XLA's own threads run the program
        kernels = [e for e in events if e.get("ph") == "X" and "XLA" in threads.get((e["pid"], e.get("tid")), "")
                   and not e["name"].startswith(_CPU_BOOKKEEPING)]
    per_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        per_name[e["name"]].append(float(e.get("dur", 0.0)))
    intervals = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in kernels]
    total_us = sum(sum(v) for v in per_name.values())
    busy_us = busy_ms(intervals) * 1e3
    span_us = (max(b for _, b in intervals) - min(a for a, _ in intervals)) if intervals else 0.0
    ranked = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))
    rows = [{"name": name, "ms_per_call": sum(d) / calls / 1e3, "share": sum(d) / total_us if total_us else 0.0,
             "count_per_call": len(d) / calls} for name, d in ranked[:top]]
    rest = ranked[top:]
    if rest:
        rest_us = sum(sum(d) for _, d in rest)
        rows.append({"name": f"({len(rest)} others)", "ms_per_call": rest_us / calls / 1e3,
                     "share": rest_us / total_us if total_us else 0.0,
                     "count_per_call": sum(len(d) for _, d in rest) / calls})
    return {"calls": calls, "device_processes": sorted(processes[p] for p in device_pids),
            "kernel_ms_per_call": total_us / calls / 1e3, "busy_ms_per_call": busy_us / calls / 1e3,
            "span_ms_per_call": span_us / calls / 1e3, "busy_fraction": busy_us / span_us if span_us else 0.0,
            "kernels": rows}


def print_summary(label: str, summary: dict) -> None:
    """Prints :func:`summarise`'s table."""
    print(f"{label}: device busy {summary['busy_ms_per_call']:.2f} ms of {summary['span_ms_per_call']:.2f} ms per call "
          f"({summary['busy_fraction']:.0%}); kernels {summary['kernel_ms_per_call']:.2f} ms summed")
    for row in summary["kernels"]:
        print(f"  {row['ms_per_call']:9.3f} ms {row['share']:6.1%} x{row['count_per_call']:<7.1f} {row['name'][:90]}")
