"""Meta-training scaling over the devices of one host: throughput at 1, 2, 4, 8 devices, and theta.

For each device count ``N`` a fresh child process sees ``N`` devices (GPUs: ``CUDA_VISIBLE_DEVICES``;
CPU: ``--xla_force_host_platform_device_count=N``, fake host devices that run in threads) and
measures, with the same per-device load at every ``N`` (weak scaling: ``N`` times the tasks):

* the canonical config (one structure, ``--canonical-per-device`` PES pairs per device) and the
  ``taskset`` mixture (``--mixture-per-device`` pairs per device in every bucket), as
  ``mixture_throughput.py`` measures them: seconds per outer step, inner steps per second (both
  antithetic members counted), achieved FLOP/s;
* the scaling efficiency ``rate(N) / (N * rate(1))`` of each (1.0: perfect; the task axis is
  sharded over the devices with ``jax.sharding``, theta replicated, gradients all-reduced);
* theta after ``--trajectory-steps`` outer steps of the canonical config with the *same global*
  ``--trajectory-tasks`` on ``N`` devices and on one (max abs and relative L2 difference): the
  sharded run must follow the one-device trajectory to float tolerance.

The parent process never initialises a JAX backend (on a GPU host it would hold memory on every
card while the children run); each child writes its figures to a JSON file the parent collects.
The JSON is rewritten after every child, so a call cut short keeps what was measured.

Usage:
    python benchmarks/scaling.py --devices 1 2 4 8 --out $OUT/scaling.json      # on a multi-GPU host
    python benchmarks/scaling.py --devices 1 2 4 --canonical-per-device 4 --mixture-per-device 2 \\
        --structures campaign/state.json --buckets 2 --configs 2 --steps 3       # a CPU smoke run (fake devices)

Writes ``benchmarks/results/scaling_<platform>.json`` without ``--out`` (refuses an existing file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np  # numpy only: the parent starts no JAX backend

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = ("canonical", "mixture")


def child_env(platform: str, devices: int) -> dict[str, str]:
    """The environment of a child that sees ``devices`` devices of ``platform`` (``gpu`` or ``cpu``).

    Example:
        >>> child_env("cpu", 4)["XLA_FLAGS"]
        '--xla_force_host_platform_device_count=4'
        >>> child_env("gpu", 2)["CUDA_VISIBLE_DEVICES"]
        '0,1'
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p),
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if platform == "cpu":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(devices))
    return env


def efficiencies(rows: list[dict]) -> None:
    """Adds ``efficiency = rate(N) / (N * rate(1))`` to each row with a one-device row of its config.

    Example:
        >>> rows = [{"config": "c", "devices": 1, "inner_steps_per_s": 100.0},
        ...         {"config": "c", "devices": 2, "inner_steps_per_s": 150.0}]
        >>> efficiencies(rows); [r["efficiency"] for r in rows]
        [1.0, 0.75]
    """
    base = {r["config"]: r["inner_steps_per_s"] for r in rows if r["devices"] == 1 and "inner_steps_per_s" in r}
    for r in rows:
        if r["config"] in base and "inner_steps_per_s" in r:
            r["efficiency"] = r["inner_steps_per_s"] / (r["devices"] * base[r["config"]])


def trajectory_difference(a: list, b: list) -> dict:
    """Max abs and relative L2 difference between two lists of theta leaves (numpy arrays).

    Example:
        >>> trajectory_difference([np.ones(3)], [np.ones(3)])
        {'max_abs': 0.0, 'rel_l2': 0.0}
    """
    x = np.concatenate([np.ravel(v).astype(np.float64) for v in a])
    y = np.concatenate([np.ravel(v).astype(np.float64) for v in b])
    if x.shape != y.shape:
        raise ValueError(f"theta sizes differ: {x.size} vs {y.size}")
    diff = x - y
    return {"max_abs": float(np.max(np.abs(diff), initial=0.0)),
            "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(y), 1e-30))}


# --- child side --------------------------------------------------------------------------------

def _child(args) -> None:
    import jax

    sys.path.insert(0, HERE)
    from common import environment
    from mixture_throughput import measure_canonical, measure_mixture

    import lopt
    from lopt.meta.trainer import MetaTrainer

    out: dict = {"environment": environment(), "device_count": jax.device_count(), "rows": []}

    def write():
        with open(args.child_out, "w", encoding="utf-8") as f:
            json.dump(out, f)

    n = jax.device_count()
    if n != args.child:
        raise SystemExit(f"child asked for {args.child} devices but JAX sees {n}")
    if "canonical" in args.configs:
        ns = argparse.Namespace(canonical_tasks=n * args.canonical_per_device, lopt=args.lopt, steps=args.steps)
        out["rows"].append({**measure_canonical(ns), "config": "canonical", "devices": n})
        write()
    if "mixture" in args.configs:
        ns = argparse.Namespace(buckets=args.buckets, configs=args.configs_per_bucket,
                                tasks=n * args.mixture_per_device, lopt=args.lopt, steps=args.steps,
                                set=list(args.set), structures=args.structures)
        row = measure_mixture(ns, lambda r: None)
        row.pop("structures", None)  # per-structure timings: in mixture_throughput.py's output, not here
        out["rows"].append({**row, "config": "mixture", "devices": n})
        write()
    if args.trajectory_steps:
        cfg = lopt.meta.load_config("canonical", [f"estimator.num_tasks={args.trajectory_tasks}",
                                                  f"lopt.name={args.lopt}", "normalizer.enabled=false"])
        trainer = MetaTrainer(cfg, tempfile.mkdtemp(), progress=False)
        state = trainer.initial_state()
        theta, outer_state, est_state = state["theta"], state["outer_state"], state["estimator_state"]
        step = trainer._outer_step.trace(trainer._estimator, theta, outer_state, est_state,
                                         jax.random.key(0)).lower().compile()
        for i in range(args.trajectory_steps):
            theta, outer_state, est_state, _ = step(trainer._estimator, theta, outer_state, est_state,
                                                    jax.random.key(i))
        leaves = [np.asarray(x) for x in jax.tree.leaves(theta)]
        np.savez(args.child_out + ".theta.npz", *leaves)
        out["trajectory"] = {"tasks": args.trajectory_tasks, "steps": args.trajectory_steps,
                             "sharded": trainer._mesh is not None}
        write()


# --- parent side -------------------------------------------------------------------------------

def _probe(platform_hint: str | None) -> tuple[str, int]:
    """``(platform, visible devices)`` from a throwaway child (the parent keeps no backend)."""
    code = "import jax; print(jax.default_backend(), jax.device_count())"
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if platform_hint == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    platform, count = done.stdout.split()[-2:]
    return ("cpu" if platform == "cpu" else "gpu"), int(count)


def _load_theta(path: str) -> list:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=None,
                        help="device counts (default: 1, 2, 4, ... up to the visible GPUs; 1 2 4 on a CPU)")
    parser.add_argument("--platform", choices=("auto", "gpu", "cpu"), default="auto",
                        help="cpu: fake host devices even where a GPU is visible")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--canonical-per-device", type=int, default=128, help="PES pairs per device, canonical")
    parser.add_argument("--mixture-per-device", type=int, default=8, help="PES pairs per device in each bucket")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--configs-per-bucket", type=int, default=8)
    parser.add_argument("--structures", default="", help="as mixture_throughput.py (e.g. campaign/state.json)")
    parser.add_argument("--set", action="append", default=[], help="overrides of the taskset config")
    parser.add_argument("--lopt", default="nominal")
    parser.add_argument("--steps", type=int, default=20, help="timed outer steps")
    parser.add_argument("--trajectory-steps", type=int, default=5, help="outer steps compared (0: none)")
    parser.add_argument("--trajectory-tasks", type=int, default=64, help="global PES pairs of the comparison")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per child process")
    parser.add_argument("--out", default=None, help="the JSON (default benchmarks/results/scaling_<platform>.json)")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    platform, visible = _probe(None if args.platform == "auto" else args.platform)
    platform = "cpu" if args.platform == "cpu" else platform
    counts = args.devices or ([1, 2, 4] if platform == "cpu" else [c for c in (1, 2, 4, 8) if c <= visible])
    bad = [c for c in counts if c < 1 or (platform == "gpu" and c > visible)]
    if bad or 1 not in counts:
        parser.error(f"--devices {counts}: each count must be 1..{visible if platform == 'gpu' else 'any'} on "
                     f"this {platform} host, and 1 must be among them (the baseline of the efficiencies)")
    if args.trajectory_steps and args.trajectory_tasks % max(counts):
        parser.error(f"--trajectory-tasks={args.trajectory_tasks} must divide evenly over {max(counts)} devices")
    out_path = args.out or os.path.join(HERE, "results", f"scaling_{platform}.json")
    if os.path.exists(out_path):
        parser.error(f"--out={out_path!r} exists; choose a new file (a result is never overwritten)")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    payload: dict = {"benchmark": "scaling", "platform": platform, "visible_devices": visible,
                     "per_device": {"canonical": args.canonical_per_device, "mixture": args.mixture_per_device},
                     "trajectory": {"tasks": args.trajectory_tasks, "steps": args.trajectory_steps},
                     "rows": [], "trajectories": [], "errors": [], "children": {}}
    work = tempfile.mkdtemp(prefix="lopt_scaling_")
    thetas: dict[int, list] = {}
    forwarded = _strip_out(argv if argv is not None else sys.argv[1:])

    def write():
        efficiencies(payload["rows"])
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)

    for n in sorted(set(counts)):
        child_out = os.path.join(work, f"devices{n}.json")
        cmd = [sys.executable, os.path.abspath(__file__), *forwarded, "--child", str(n),
               "--child-out", child_out]
        start = time.perf_counter()
        print(f"[scaling] {n} {platform} device(s) ...", flush=True)
        try:
            done = subprocess.run(cmd, check=False, env=child_env(platform, n), timeout=args.timeout_s, text=True,
                                  capture_output=True)
            if done.returncode:
                payload["errors"].append(f"{n} devices: exit {done.returncode}: {done.stderr[-2000:]}")
        except subprocess.TimeoutExpired:
            payload["errors"].append(f"{n} devices: no result in {args.timeout_s:.0f} s")
        seconds = time.perf_counter() - start
        if os.path.exists(child_out):
            with open(child_out, encoding="utf-8") as f:
                result = json.load(f)
            payload["rows"] += result["rows"]
            payload["children"][str(n)] = {"environment": result["environment"], "seconds": seconds}
            if os.path.exists(child_out + ".theta.npz"):
                thetas[n] = _load_theta(child_out + ".theta.npz")
                if n != 1 and 1 in thetas:
                    diff = trajectory_difference(thetas[n], thetas[1])
                    payload["trajectories"].append({"devices": n, "against": 1, **diff,
                                                    "sharded": result["trajectory"]["sharded"]})
        write()
        for r in payload["rows"]:
            if r["devices"] == n:
                print(f"  {r['config']:<10} {r['inner_steps_per_s']:>14,.0f} inner steps/s "
                      f"{r['seconds_per_outer_step']:.4f} s/outer step {r['achieved_tflops']:.3f} TFLOP/s "
                      f"efficiency {r.get('efficiency', float('nan')):.2f}", flush=True)
    print(f"\n{'config':<10}{'devices':>8}{'inner steps/s':>16}{'s/outer step':>14}{'TFLOP/s':>9}{'efficiency':>11}")
    for r in sorted(payload["rows"], key=lambda r: (r["config"], r["devices"])):
        print(f"{r['config']:<10}{r['devices']:>8}{r['inner_steps_per_s']:>16,.0f}{r['seconds_per_outer_step']:>14.4f}"
              f"{r['achieved_tflops']:>9.3f}{r.get('efficiency', float('nan')):>11.2f}")
    for t in payload["trajectories"]:
        print(f"theta after {args.trajectory_steps} outer steps, {t['devices']} devices vs 1 "
              f"({args.trajectory_tasks} tasks; sharded: {t['sharded']}): max abs {t['max_abs']:.2e}, "
              f"rel L2 {t['rel_l2']:.2e}")
    for e in payload["errors"]:
        print("ERROR", e[:500])
    print(f"saved {out_path}")
    return 1 if payload["errors"] else 0


def _strip_out(argv: list[str]) -> list[str]:
    """``argv`` without ``--out X`` / ``--out=X`` (children write to their own files)."""
    result, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            result.append(a)
    return result


if __name__ == "__main__":
    sys.exit(main())
