"""What the fused ``mlp`` step's bfloat16 products cost in training, measured on the CPU.

``MLPLOpt(kernel_precision="bf16")`` rounds the operands of the per-parameter network's hidden
matrix products to bfloat16 (float32 accumulation; the 8-wide first product stays TF32,
``tiles.BF16_MIN_K``), which made the fused GPU step 22% cheaper on an H100 before that first
product was taken out of bf16 (stop 59; not re-timed since); its update differs from float32's by ~0.4%. Pallas interpret mode computes those products as the
GPU's tensor cores do, so this benchmark trains the canonical task (8x8 Fashion-MNIST MLP, or
digits without it) with a meta-trained ``mlp`` theta through the fused kernel at each precision,
same seeds and batches, and compares the training losses (mean of the last 50 steps) and their
whole curves. In interpret mode ``"tf32"`` is computed in float32, so the comparison is
bfloat16 products against exact ones: an upper bound on what tf32 to bf16 changes on a GPU.

Usage:
    python benchmarks/kernel_precision_training.py THETA [--steps 1000] [--seeds 4] [--out FILE]

``THETA`` is an ``mlp`` theta file (e.g. ``runs/train-quickstart-*/theta.safetensors`` from
``bash scripts/main.sh``). Writes ``benchmarks/results/kernel_precision_training_<device>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import jax
import numpy as np
from common import refuse_existing_out, save

import lopt
from lopt import kernels

TASK = {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
        "activation": "relu", "batch_size": 128}


def train_losses(task, lopt_, theta, steps: int, seeds: int) -> np.ndarray:
    """``[seeds, steps]`` training losses through the fused kernel in interpret mode."""
    optimizer = lopt_.optimizer(theta, num_steps=steps)

    def one(key):
        state = lopt.inner.init_state(task, optimizer, key=key)
        return lopt.inner.run_steps(task, optimizer, state, key=key, num_steps=steps)[1]

    with kernels.mode_scope("interpret"):
        run = jax.jit(jax.vmap(one))
        return np.asarray(run(jax.random.split(jax.random.key(0), seeds)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("theta", help="an mlp theta file")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["tf32", "bf16"])
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    theta, lopt_ = lopt.learned.load_theta(args.theta)
    if lopt_.name != "mlp":
        parser.error(f"{args.theta!r} holds a {lopt_.name!r} theta; this benchmark needs an 'mlp' one.")
    cfg = dict(TASK)
    if "fashion_mnist" not in lopt.tasks.datasets.available():
        cfg["dataset"] = "digits"
    task = lopt.tasks.build(cfg)
    curves, rows = {}, []
    for precision in args.precisions:
        start = time.perf_counter()
        curves[precision] = train_losses(task, lopt_.with_execution_options(kernel_precision=precision), theta,
                                         args.steps, args.seeds)
        final = curves[precision][:, -50:].mean(axis=1)
        rows.append({"precision": precision, "final_loss_per_seed": final.tolist(),
                     "final_loss_mean": float(final.mean()), "seconds": time.perf_counter() - start})
        print(f"{precision:>6}: final train loss {final.mean():.4f} (per seed {np.round(final, 4).tolist()}), "
              f"{rows[-1]['seconds']:.0f} s", flush=True)
    base = args.precisions[0]
    for row in rows[1:]:
        diff = curves[row["precision"]] - curves[base]
        row["vs_" + base] = {
            "final_loss_rel_diff_mean": float(np.mean(
                np.asarray(row["final_loss_per_seed"]) / np.asarray(rows[0]["final_loss_per_seed"]) - 1)),
            "curve_max_abs_diff": float(np.max(np.abs(diff))),
            "curve_mean_abs_diff": float(np.mean(np.abs(diff)))}
        print(f"{row['precision']} vs {base}: final loss {100 * row['vs_' + base]['final_loss_rel_diff_mean']:+.2f}% "
              f"(mean over seeds), curves differ by {row['vs_' + base]['curve_mean_abs_diff']:.2e} on average, "
              f"{row['vs_' + base]['curve_max_abs_diff']:.2e} at most")
    payload = {"benchmark": "kernel_precision_training", "theta": args.theta, "task": cfg,
               "num_params": task.num_params(), "steps": args.steps, "seeds": args.seeds, "rows": rows}
    print("saved", save("kernel_precision_training", payload, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
