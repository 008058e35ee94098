"""Self-trained learned optimizers on the held-out suite, against Adam (default, suite- and per-task-tuned).

Runs the protocol of ``benchmarks/pretrained_heldout.py`` (same tasks, same 15-point Adam grid
plus Adam 1e-3, the same selection on validation loss and scoring on test loss) for several
theta files at once, training the Adam grid of each task only once. Default candidates: the best
members written by ``benchmarks/self_training_population.py`` (a population self-trained with
learned teachers, and the same population outer-trained by Adam).

Usage:
    nice -n 10 python benchmarks/self_training_heldout.py --quick --tasks regression_diabetes_linear \
        regression_diabetes_mlp64 quadratic_cond1e6_dim100 quadratic_cond1e5_dim1000_noisy losg_rosenbrock
    nice -n 10 python benchmarks/self_training_heldout.py --quick --result-name self_training_kept_heldout \
        --thetas benchmarks/results/self_training_kept_thetas/learnable_adam_*_seed0.safetensors
Saves ``benchmarks/results/self_training_heldout_<device>.json`` (``--result-name`` changes it) and
prints, per task, the final test loss of every candidate and of the three Adam baselines.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrained_heldout as protocol
from common import save

import lopt
from lopt.pretrained import heldout

THETAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "self_training_population")


def per_task_table(results: dict) -> str:
    """Final test loss per task of every candidate and of Adam 1e-3, suite- and per-task-tuned Adam."""
    labels = list(results)
    first = results[labels[0]]["tasks"]
    common = len(os.path.commonprefix(labels)) if len(labels) > 1 else 0  # e.g. "learnable_adam_"
    head = f"{'task':34s} {'steps':>6s} " + " ".join(f"{label[common:][:24]:>24s}" for label in labels) + \
        f" {'adam 1e-3':>10s} {'adam suite':>10s} {'adam task':>10s} {'task lr':>8s}"
    lines = [head, "-" * len(head)]
    for i, task in enumerate(first):
        b = task["baselines"]
        lines.append(f"{task['name']:34s} {task['num_steps']:6d} "
                     + " ".join(f"{results[label]['tasks'][i]['candidate_final_test']:24.4g}" for label in labels)
                     + f" {b['adam_default']['final_test']:10.4g} {b['adam_suite']['final_test']:10.4g} "
                       f"{b['adam_per_task']['final_test']:10.4g} {task['per_task_lr']:8.2g}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--thetas", nargs="+", default=sorted(glob.glob(os.path.join(THETAS, "*.safetensors"))))
    parser.add_argument("--tasks", nargs="+", default=list(heldout.names()), choices=heldout.names(),
                        help="a subset of the suite (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="--steps-scale 0.05 --seeds 1")
    parser.add_argument("--result-name", default="self_training_heldout", help="results/<name>_<device>.json")
    args = parser.parse_args()
    if args.quick:
        args.steps_scale, args.seeds = 0.05, 1
    if not args.thetas:
        parser.error(f"no theta files (none in {THETAS}); run benchmarks/self_training_population.py first")
    candidates = {os.path.splitext(os.path.basename(p))[0]: lopt.learned.load_theta(p) for p in args.thetas}
    names = list(args.tasks)
    per_candidate = {label: [] for label in candidates}
    start = time.perf_counter()
    for entry in heldout.suite(names, steps_scale=args.steps_scale):
        task_start = time.perf_counter()
        num_steps, eval_every = protocol.horizon_and_eval_every(entry.num_steps)
        task = entry.build()
        kwargs = {"num_steps": num_steps, "eval_every": eval_every, "eval_batches": protocol.EVAL_BATCHES}
        adam = protocol.train_adam(task, num_steps, eval_every, args.seeds)
        programs = {}  # one compiled program per architecture; theta is an argument
        for label, (theta, lopt_) in candidates.items():
            if lopt_ not in programs:
                programs[lopt_] = jax.jit(lambda th, keys, lo=lopt_, t=task, kw=kwargs: jax.vmap(
                    lambda k: lopt.inner.train(t, lo.optimizer(th, num_steps=kw["num_steps"]), key=k, **kw))(keys))
            cand = programs[lopt_](theta, protocol.seed_keys(args.seeds))
            per_candidate[label].append(protocol.summarize_task(entry.name, num_steps,
                                                                {"adam": adam, "cand": jax.tree.map(np.asarray, cand)}))
        finals = {label: round(rows[-1]["candidate_final_test"], 4) for label, rows in per_candidate.items()}
        row = next(iter(per_candidate.values()))[-1]  # the Adam numbers are shared
        print(f"{entry.name}: {num_steps} steps x {args.seeds} seeds, {time.perf_counter() - task_start:.0f} s; "
              f"final test loss {finals}; best Adam lr {row['per_task_lr']:.2g} ({row['best_grid_test']:.4f})",
              flush=True)
    results = {}
    for label, tasks in per_candidate.items():
        overall = protocol.compare(tasks, protocol.choose_suite_lr(tasks))
        theta, _ = candidates[label]
        results[label] = {"overall": overall, "tasks": tasks,
                          "theta_scalars": {k: float(v) for k, v in theta.items() if np.size(v) == 1}}
        print(f"\n{label}: " + "; ".join(
            f"vs {b}: wins {overall[b]['win_fraction']:.2f}, median speedup {overall[b]['median_speedup']:.2f}"
            for b in ("adam_default", "adam_suite", "adam_per_task"))
            + f"; median normalised test loss {overall['candidate_median_normalized_test']:.3f}")
    print("\nfinal test loss (mean over seeds); suite-tuned Adam learning rate "
          f"{next(iter(results.values()))['overall']['suite_learning_rate']:.3g}\n" + per_task_table(results))
    path = save(args.result_name, {"thetas": args.thetas, "tasks": names, "seeds": args.seeds,
                                   "steps_scale": args.steps_scale, "total_seconds": time.perf_counter() - start,
                                   "grid": protocol.GRID.tolist(), "candidates": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
