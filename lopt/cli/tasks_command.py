"""``lopt tasks``: list task families with parameter counts, sampled configs, step times, the taskset.

* ``lopt tasks`` lists every family with its default config's parameter count (``--timings``
  adds the measured step time; ``--samples N`` the range over N sampled configs).
* ``lopt tasks --family NAME`` shows a family's default config, sampling ranges and sampled
  configs with their parameter counts (``--timings``: FLOPs and measured step times).
* ``lopt tasks --taskset`` shows the default task distribution: structures and distinct
  configs per family, and the compile arithmetic of a meta-training run over its buckets.

Example:
    >>> from lopt.cli import main
    >>> main(["tasks", "--family", "quadratic", "--samples", "1"])  # doctest: +ELLIPSIS
    quadratic: Random quadratic ...
    0
"""

from __future__ import annotations

import argparse
import json
import math

import lopt
from lopt.tasks import Budget, estimate_cost

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tasks", help="list task families, sampled configs, parameter counts and step times",
                            description="List task families with parameter counts; with --family, show sampled "
                                        "configs; with --taskset, the default task distribution.")
    parser.add_argument("--family", help="show configs of this family (default: list all families)")
    parser.add_argument("--samples", type=int, default=None,
                        help="sampled configs to show (default 3 with --family; when listing, the parameter "
                             "range over this many samples per family, default none)")
    parser.add_argument("--seed", type=int, default=0, help="first sampling seed (default 0)")
    parser.add_argument("--timings", action="store_true",
                        help="also estimate FLOPs and measure the step time (compiles each structure: slower)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    taskset = parser.add_argument_group("taskset (with --taskset)")
    taskset.add_argument("--taskset", action="store_true", help="show the default task distribution")
    taskset.add_argument("--families", help="comma-separated families (default: all but augmented and fixed)")
    taskset.add_argument("--structures", type=int, default=16, help="structures per family (default 16)")
    taskset.add_argument("--no-budget", action="store_true", help="do not filter structures by the default budget")
    taskset.add_argument("--buckets", type=int, default=16, help="buckets (compiled structures) per run (default 16)")
    taskset.add_argument("--per-bucket", type=int, default=8, help="configs per bucket (default 8)")
    taskset.add_argument("--outer-steps", type=int, default=1000, help="outer steps of the run (default 1000)")
    parser.set_defaults(handler=run)


def _cost(cfg, timings: bool) -> dict:
    """Parameter count (and with ``timings`` FLOPs and step milliseconds) of ``cfg``."""
    try:
        cost = estimate_cost(cfg, flops=timings, timing=timings)
    except FileNotFoundError:  # dataset not installed: the config is still valid
        return {"num_params": None}
    out = {"num_params": cost.num_params}
    if timings:
        out.update(flops=cost.flops, step_ms=None if cost.step_seconds is None else 1e3 * cost.step_seconds)
    return out


def _describe(name: str, samples: int, seed: int, timings: bool) -> dict:
    family = lopt.tasks.get(name)
    default = family.default_config()
    configs = [family.sample(seed + i) for i in range(samples)]
    info = {
        "family": name,
        "description": family.description,
        "default_config": default.to_dict(),
        "default": _cost(default, timings),
        "sampling_ranges": family.sampling_ranges(),
        "samples": [{"seed": seed + i, "config": cfg.to_dict(), **_cost(cfg, timings)}
                    for i, cfg in enumerate(configs)],
    }
    info["default_num_params"] = info["default"]["num_params"]
    return info


def _params(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _cost_text(cost: dict) -> str:
    text = "dataset not installed" if cost["num_params"] is None else f"{cost['num_params']:,} params"
    if cost.get("flops") is not None:
        text += f", {cost['flops']:.3g} FLOPs/step"
    if cost.get("step_ms") is not None:
        text += f", {cost['step_ms']:.3g} ms/step"
    return text


def _list(names: list[str], args: argparse.Namespace) -> int:
    samples = args.samples or 0
    infos = [_describe(n, samples, args.seed, args.timings) for n in names]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    width = max(len(n) for n in names)
    print("Task families (show configs with `lopt tasks --family NAME`; parameter counts of the default config"
          + (f", and min-max over {samples} sampled configs" if samples else "") + "):")
    for info in infos:
        columns = [f"{info['family']:<{width}}", f"{_params(info['default']['num_params']):>9}"]
        counts = [s["num_params"] for s in info["samples"] if s["num_params"] is not None]
        if samples:
            columns.append(f"{_params(min(counts)) if counts else 'n/a':>9}-{_params(max(counts)) if counts else 'n/a':<9}")
        if args.timings:
            ms = info["default"].get("step_ms")
            columns.append(f"{'n/a' if ms is None else f'{ms:.3g} ms':>9}")
        print("  " + "  ".join(columns) + f"  {info['description']}")
    return 0


def _taskset(args: argparse.Namespace) -> int:
    for name in ("structures", "buckets", "per_bucket", "outer_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1.")
    families = args.families.split(",") if args.families else None
    kwargs = {"num_structures": args.structures}
    if args.no_budget:
        kwargs["budget"] = None
    dist = lopt.tasks.taskset(families, **kwargs)
    summary = dist.summary()
    buckets = min(args.buckets, summary["structures"])
    per_cycle = buckets * args.per_bucket
    summary["run"] = {
        "outer_steps": args.outer_steps, "buckets": buckets, "configs_per_bucket": args.per_bucket,
        "compiles": buckets,
        "configs_fixed_buckets": per_cycle,
        "configs_redrawn_variants": min(args.outer_steps * args.per_bucket, summary["configs"]),
        "compiles_one_program_per_config": min(args.outer_steps * args.per_bucket, summary["configs"]),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    budget = dist.budget if isinstance(dist.budget, Budget) else "none"
    print(f"taskset: {len(dist.weights)} families, {summary['structures']} structures "
          f"(at most {args.structures} per family), {summary['configs']:,} distinct configs; budget: {budget}")
    width = max(len(n) for n in summary["families"])
    for name, row in summary["families"].items():
        print(f"  {name:<{width}}  weight {row['weight']:.3f}  {row['structures']:>3} structures  "
              f"{row['configs']:>12,} configs")
    run = summary["run"]
    print(f"\nA {run['outer_steps']:,}-outer-step run cycling over {buckets} buckets of {args.per_bucket} configs "
          f"compiles {buckets} program{'s' if buckets != 1 else ''} (one per bucket; each outer step reuses one):\n"
          f"  * buckets kept fixed: {per_cycle:,} distinct configs;\n"
          f"  * variants re-drawn each time a bucket comes round (dist.variants): up to "
          f"{run['configs_redrawn_variants']:,} distinct configs, still {buckets} compiles;\n"
          f"  * one program per config instead would compile up to "
          f"{run['compiles_one_program_per_config']:,} programs ({math.ceil(run['compiles_one_program_per_config'] / buckets)}x more).")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.taskset:
        return _taskset(args)
    samples = (3 if args.family else 0) if args.samples is None else args.samples
    if samples < 0:
        raise ValueError(f"--samples={samples} must be >= 0.")
    args.samples = samples
    names = [args.family] if args.family else list(lopt.tasks.names())
    for name in names:
        lopt.tasks.get(name)  # unknown names fail here, listing the valid ones
    if not args.family:
        return _list(names, args)
    info = _describe(args.family, samples, args.seed, args.timings)
    if args.json:
        print(json.dumps([info], indent=2))
        return 0
    print(f"{args.family}: {info['description']}\n\ndefault config ({_cost_text(info['default'])}):\n"
          f"  {json.dumps(info['default_config'])}")
    print("\nsampling ranges:")
    for key, text in info["sampling_ranges"].items():
        print(f"  {key}: {text}")
    print(f"\n{len(info['samples'])} sampled configs:")
    for sample in info["samples"]:
        print(f"  seed {sample['seed']} ({_cost_text(sample)}): {json.dumps(sample['config'])}")
    return 0
