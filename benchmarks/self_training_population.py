"""Population self-training (``lopt selftrain``) against Adam-outer-trained populations, at equal compute.

Metz et al. 2021 (arXiv 2101.07367) train a population of randomly initialised learned
optimizers with learned optimizers taken from the population itself, with PBT selection. This
script runs :class:`lopt.meta.selftrain.SelfTrainer` on lopt's ``canonical`` problem (an MLP on
8x8 Fashion-MNIST or digits; PES over 1,000-step inner trainings in 50-step unrolls), once per
``--teachers`` entry: learned teachers (``best``: every member is outer-trained by the best
member's theta) and the baseline ``adam:LR`` (the same population, selection and evaluations,
with Adam as every member's outer optimizer). All runs share the seed, the random initial
population, the number of outer steps and the held-out evaluations, so they cost the same
inner steps: equal compute.

Usage:
    nice -n 10 python benchmarks/self_training_population.py          # ~10-15 min on 2 busy CPU cores
Saves ``benchmarks/results/self_training_population_cpu.json``, the best member of every run
under ``benchmarks/results/self_training_population/<teacher>_seed<seed>.safetensors`` and
``docs/examples/self_training_population.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save

import lopt
from lopt.meta.selftrain import PopulationSettings, SelfTrainer, plot_population

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURE = os.path.join(HERE, "..", "docs", "examples", "self_training_population.png")
THETAS = os.path.join(HERE, "results", "self_training_population")


def label(teacher: str) -> str:
    """A legend label for a population teacher setting."""
    return f"Adam {teacher[5:]} outer" if teacher.startswith("adam:") else f"learned outer (teacher: {teacher} member)"


def replot(runs: dict, path: str) -> None:
    """Draws the figure from the saved per-generation scores and per-step meta-losses."""
    plot_population({label(t): ([{"generation": g, "scores": s, "best_score": b} for g, (s, b) in
                                 enumerate(zip(r["scores_per_generation"], r["best_score_per_generation"]))],
                                [{"step": i + 1, "meta_loss": m} for i, m in enumerate(r["mean_meta_loss_per_step"])])
                     for t, r in runs.items()}, path, smooth_window=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lopt", default="learnable_adam")
    parser.add_argument("--teachers", default="best,adam:0.001,adam:0.01")
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--generation-steps", type=int, default=25)
    parser.add_argument("--init-std", type=float, default=1.0)
    parser.add_argument("--perturb-std", type=float, default=0.1)
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--eval-tasks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result-name", default="self_training_population")
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--replot", metavar="JSON", help="only redraw --figure from a saved results file")
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as f:
            replot(json.load(f)["runs"], args.figure)
        return
    overrides = [f"lopt.name={args.lopt}", f"seed={args.seed}", f"estimator.num_tasks={args.num_tasks}",
                 f"trainer.eval_tasks={args.eval_tasks}", "trainer.eval_steps=1000"]
    runs = {}
    work = tempfile.mkdtemp(prefix="selftrain_bench_")
    os.makedirs(THETAS, exist_ok=True)
    for teacher in args.teachers.split(","):
        settings = PopulationSettings(size=args.size, generations=args.generations,
                                      generation_steps=args.generation_steps, teacher=teacher, replace=1,
                                      init_std=args.init_std, perturb_std=args.perturb_std)
        out = os.path.join(work, teacher.replace(":", "_"))
        start = time.perf_counter()
        result = SelfTrainer(lopt.meta.load_config("canonical", overrides), settings, out, progress=False).run()
        wall = time.perf_counter() - start
        evals = lopt.meta.read_metrics(os.path.join(out, "eval.jsonl"))
        steps = lopt.meta.read_metrics(os.path.join(out, "metrics.jsonl"))
        shutil.copy(os.path.join(out, "theta.safetensors"),
                    os.path.join(THETAS, f"{teacher.replace(':', '_')}_seed{args.seed}.safetensors"))
        theta = result["theta"]
        runs[teacher] = {
            "settings": dataclasses.asdict(settings),
            "best_score_per_generation": [r["best_score"] for r in evals],
            "scores_per_generation": [r["scores"] for r in evals],
            "teachers_per_generation": [r.get("teachers") for r in evals],
            "mean_meta_loss_per_step": [r["meta_loss"] for r in steps],
            "final_best_score": result["best_score"],
            "best_theta_scalars": {k: float(v) for k, v in theta.items() if np.size(v) == 1},
            "wall_seconds": wall,
            "inner_steps": args.size * settings.outer_steps * 2 * args.num_tasks * 50
                           + (args.generations + 1) * args.size * args.eval_tasks * 1000,
        }
        print(f"teacher {teacher:12s} best held-out per generation "
              f"{np.round(runs[teacher]['best_score_per_generation'], 4).tolist()}  {wall:.0f} s", flush=True)
    replot(runs, args.figure)
    path = save(args.result_name, {"config": "canonical", "args": vars(args), "runs": runs})
    shutil.rmtree(work, ignore_errors=True)
    print(f"saved {path} and {os.path.normpath(args.figure)}")


if __name__ == "__main__":
    main()
