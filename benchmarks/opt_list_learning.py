"""Learn lopt's opt_list on the taskset distribution and measure its held-out best-of-k.

Runs :func:`lopt.optimizers.learn_opt_list` (random-search NAdamW on every task, greedy
ordering on the training tasks) into ``--out`` (resumable: tasks already in ``<out>/curves`` are
not run again), then prints and saves to ``benchmarks/results/opt_list_<device>.json``:

* the scale: families, structures, tasks (training / held out), trials, steps, wall time;
* the mean best-of-k normalised validation loss on the held-out tasks for the learned list and
  for random search (exact expectation), k = 1, 2, 4, ..., and the k at which random search
  first matches the list's best-of-1 / best-of-4;
* the same with the list learned on the *held-out* tasks' own table (an upper bound on what any
  ordering of these trials can do there).

``--ship`` copies the list into ``lopt/optimizers/data/opt_list.json`` (the shipped list).

Usage (the shipped list; about 30 min on a busy 2-core CPU)::

    nice -n 10 python benchmarks/opt_list_learning.py --out runs/optlist-taskset --ship \\
        --families quadratic,mlp,losg,conv_pooling,conv_fc,mlp_ae,mlp_vae,char_rnn_lm,rnn_text_classification,nvp,maf
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS_DIR, default_path, device_tag, environment, free_path

from lopt.evaluate.baselines import search_spec
from lopt.evaluate.curves import load
from lopt.evaluate.opt_list_search import OptListSearch, learn_opt_list, loss_table, task_id
from lopt.optimizers.opt_list import best_of_k, greedy_order

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "lopt", "optimizers", "data", "opt_list.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/optlist-taskset")
    parser.add_argument("--families", default=None)
    parser.add_argument("--structures", type=int, default=2)
    parser.add_argument("--tasks-per-structure", type=int, default=4)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--list-size", type=int, default=32)
    parser.add_argument("--ship", action="store_true", help="copy the list to the package's shipped list")
    args = parser.parse_args()
    families = tuple(args.families.split(",")) if args.families else None
    search = OptListSearch(families=families, num_structures=args.structures,
                           tasks_per_structure=args.tasks_per_structure, num_trials=args.trials,
                           num_steps=args.steps, list_size=args.list_size)
    start = time.perf_counter()
    result = learn_opt_list(args.out, search, progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start

    tasks = search.tasks()
    held = np.array([h for _, h in tasks])
    spec = search_spec("nadamw_search", num_trials=search.num_trials, seed=search.seed)
    table = loss_table(load(os.path.join(args.out, "curves")), [task_id(c) for c, _ in tasks], spec.keys(),
                       num_steps=search.num_steps)
    oracle = best_of_k(table[held], greedy_order(table[held], search.list_size))
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= search.list_size]
    random = result.heldout_random_best_of_k
    listed = result.heldout_best_of_k

    def matched_at(target: float) -> int | None:
        hits = [k for k in range(1, len(random) + 1) if random[k - 1] <= target]
        return hits[0] if hits else None

    summary = {
        "environment": environment(), "wall_seconds_this_call": round(seconds, 1),
        "search": result.info["search"], "families": result.info["families"],
        "num_structures": result.info["num_structures"], "num_train_tasks": result.info["num_train_tasks"],
        "num_heldout_tasks": result.info["num_heldout_tasks"],
        "k": ks,
        "heldout_opt_list": [round(float(listed[k - 1]), 4) for k in ks],
        "heldout_random_search": [round(float(random[k - 1]), 4) for k in ks],
        "heldout_oracle_order": [round(float(oracle[k - 1]), 4) for k in ks],
        "train_opt_list": [round(float(result.train_best_of_k[k - 1]), 4) for k in ks],
        "random_k_to_match_list_k1": matched_at(float(listed[0])),
        "random_k_to_match_list_k4": matched_at(float(listed[3])) if len(listed) >= 4 else None,
        "curve_dataset_sha256": result.info["curve_dataset_sha256"],
    }
    print(f"{summary['num_train_tasks']} training + {summary['num_heldout_tasks']} held-out tasks "
          f"({summary['num_structures']} structures of {len(summary['families'])} families), "
          f"{search.num_trials} NAdamW trials x {search.num_steps} steps each")
    print("k:                   " + " ".join(f"{k:>7}" for k in ks))
    for name in ("heldout_opt_list", "heldout_random_search", "heldout_oracle_order", "train_opt_list"):
        print(f"{name:<21}" + " ".join(f"{v:>7.4f}" for v in summary[name]))
    print(f"random search needs k={summary['random_k_to_match_list_k1']} to match the list's k=1, "
          f"k={summary['random_k_to_match_list_k4']} to match its k=4")
    path = default_path("opt_list")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"saved {path}")
    figure = free_path(os.path.join(RESULTS_DIR, f"opt_list_best_of_k_{device_tag()}.png"))
    shutil.copyfile(os.path.join(args.out, "opt_list_best_of_k.png"), figure)
    if args.ship:
        os.makedirs(os.path.dirname(SHIPPED), exist_ok=True)
        shutil.copyfile(result.path, SHIPPED)
        print(f"shipped list: {os.path.normpath(SHIPPED)}")


if __name__ == "__main__":
    main()
