"""``lopt optlist``: learn an opt_list (ordered NAdamW settings) or show one.

Examples::

    lopt optlist show                       # the shipped list: settings and held-out best-of-k
    lopt optlist show runs/optlist/opt_list.json --k 5
    lopt optlist learn --out runs/optlist   # random search over lopt's taskset, greedy list
    lopt optlist learn --out runs/optlist --families quadratic,mlp --trials 32 --steps 100

``learn`` resumes: tasks already in ``<out>/curves`` are not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from lopt.evaluate.opt_list_search import OptListSearch, learn_opt_list
from lopt.optimizers.opt_list import opt_list, opt_list_info

_DEFAULTS = OptListSearch()


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("optlist", help="learn or show an opt_list (ordered NAdamW settings)",
                            description="Learn an ordered list of NAdamW settings on a task distribution "
                                        "(TaskSet's opt_list), or show one.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print a list's settings and its held-out best-of-k")
    show.add_argument("path", nargs="?", help="an opt_list.json (default: the shipped list)")
    show.add_argument("--k", type=int, help="show the first k settings (default all)")
    learn = actions.add_parser("learn", help="random-search NAdamW over tasks, then order greedily")
    learn.add_argument("--out", required=True, help="output directory (curves/, opt_list.json, figure)")
    learn.add_argument("--families", help="comma-separated task families (default: lopt.tasks.taskset's)")
    for field, flag, kind in (("num_structures", "--structures", int), ("tasks_per_structure", "--tasks-per-structure",
                              int), ("num_trials", "--trials", int), ("num_steps", "--steps", int),
                              ("num_seeds", "--seeds", int), ("eval_every", "--eval-every", int),
                              ("max_params", "--max-params", int), ("max_flops", "--max-flops", float),
                              ("heldout_fraction", "--heldout-fraction", float), ("list_size", "--list-size", int),
                              ("seed", "--seed", int)):
        learn.add_argument(flag, dest=field, type=kind, default=getattr(_DEFAULTS, field),
                           help=f"default {getattr(_DEFAULTS, field)}")
    parser.set_defaults(handler=run)


def _show(args: argparse.Namespace) -> int:
    settings, info = opt_list(args.k, path=args.path), opt_list_info(args.path)
    for i, s in enumerate(settings, start=1):
        print(f"{i:>3}  {json.dumps(s, sort_keys=True)}")
    heldout, random = info.get("heldout_best_of_k"), info.get("heldout_random_best_of_k")
    if heldout and random:
        print(f"held-out best-of-k (normalised valid loss), learned list vs random search, on "
              f"{info.get('num_heldout_tasks')} tasks:")
        for k in (1, 2, 4, 8, 16, 32):
            if k <= len(heldout):
                print(f"  k={k:<3} {heldout[k - 1]:.3f}  vs  {random[k - 1]:.3f}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return _show(args)
    fields = {f.name for f in dataclasses.fields(OptListSearch)}
    options = {k: v for k, v in vars(args).items() if k in fields and k != "families"}
    families = tuple(f.strip() for f in args.families.split(",") if f.strip()) if args.families else None
    search = OptListSearch(families=families, **options)
    result = learn_opt_list(args.out, search, progress=print)
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= len(result.settings)]
    print("k:                " + " ".join(f"{k:>6}" for k in ks))
    print("opt_list held-out " + " ".join(f"{result.heldout_best_of_k[k - 1]:>6.3f}" for k in ks))
    print("random held-out   " + " ".join(f"{result.heldout_random_best_of_k[k - 1]:>6.3f}" for k in ks))
    print(f"list: {result.path}")
    return 0
