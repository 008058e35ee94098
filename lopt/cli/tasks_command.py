"""``lopt tasks``: list task families and show sampled configs."""

from __future__ import annotations

import argparse
import json

import lopt


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tasks", help="list task families and sampled configs",
                            description="List task families; with --family, show sampled configs.")
    parser.add_argument("--family", help="show configs of this family (default: list all families)")
    parser.add_argument("--samples", type=int, default=3, help="number of sampled configs to show (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first sampling seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def _describe(name: str, samples: int, seed: int) -> dict:
    family = lopt.tasks.get(name)
    configs = [family.sample(seed + i) for i in range(samples)]
    return {
        "family": name,
        "description": family.description,
        "default_config": family.default_config().to_dict(),
        "sampling_ranges": family.sampling_ranges(),
        "samples": [{"seed": seed + i, "config": cfg.to_dict(), "num_params": _num_params(cfg)}
                    for i, cfg in enumerate(configs)],
    }


def _num_params(cfg) -> int | None:
    try:
        return lopt.tasks.build(cfg).num_params()
    except FileNotFoundError:  # dataset not installed: the config is still valid
        return None


def run(args: argparse.Namespace) -> int:
    if args.samples < 0:
        raise ValueError(f"--samples={args.samples} must be >= 0.")
    names = [args.family] if args.family else list(lopt.tasks.names())
    for name in names:
        lopt.tasks.get(name)  # unknown names fail here, listing the valid ones
    if args.json:
        samples = args.samples if args.family else 0
        print(json.dumps([_describe(n, samples, args.seed) for n in names], indent=2))
        return 0
    if not args.family:
        width = max(len(n) for n in names)
        print("Task families (show configs with `lopt tasks --family NAME`):")
        for name in names:
            print(f"  {name:<{width}}  {lopt.tasks.get(name).description}")
        return 0
    info = _describe(args.family, args.samples, args.seed)
    print(f"{args.family}: {info['description']}\n\ndefault config:\n  {json.dumps(info['default_config'])}")
    print("\nsampling ranges:")
    for key, text in info["sampling_ranges"].items():
        print(f"  {key}: {text}")
    print(f"\n{len(info['samples'])} sampled configs:")
    for sample in info["samples"]:
        params = "dataset not installed" if sample["num_params"] is None else f"{sample['num_params']:,} params"
        print(f"  seed {sample['seed']} ({params}): {json.dumps(sample['config'])}")
    return 0
