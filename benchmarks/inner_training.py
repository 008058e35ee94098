"""Inner steps per second of Adam on the canonical small MLP task, against a plain loop.

Task: ``mlp`` family, 8x8 Fashion-MNIST (digits if not installed), one hidden layer of 32,
batch 128. Measured for 1 and 64 vmapped seeds with ``lopt.inner.run_steps`` (one compiled
``lax.scan``, batches drawn inside), and for a plain reference: a Python loop calling a jitted
optax step with batches indexed on the host (how most training loops, and the predecessor
library's data iterators, feed a model).

Usage: python benchmarks/inner_training.py [--steps 2000] [--seeds 1 64]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from common import save, time_call

import lopt

CONFIG = {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
          "activation": "relu", "batch_size": 128}


def lopt_steps_per_second(task, num_seeds: int, steps: int) -> dict:
    optimizer = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    init = jax.jit(jax.vmap(lambda k: lopt.inner.init_state(task, optimizer, key=k)))
    states = init(keys)
    run = jax.jit(jax.vmap(lambda s, k: lopt.inner.run_steps(task, optimizer, s, key=k, num_steps=steps)))
    first, best = time_call(lambda: run(states, keys))
    return {"seeds": num_seeds, "steps": steps, "compile_and_first_s": first, "best_s": best,
            "inner_steps_per_s": num_seeds * steps / best}


def plain_loop_steps_per_second(task, steps: int) -> dict:
    """A plain host loop: jitted step, batches gathered in numpy on the host each step."""
    optimizer = optax.adam(1e-3)
    data = task.data
    x_all = np.asarray(data.splits["train"]["x"])
    y_all = np.asarray(data.splits["train"]["y"])
    scale, shift = data.info.x_scale, data.info.x_shift
    params = task.init(jax.random.key(0))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        x = x.astype(jnp.float32) * scale + shift
        loss, grads = jax.value_and_grad(task.loss)(params, {"x": x, "y": y})
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)

    def loop():
        p, s = params, opt_state
        for _ in range(steps):
            idx = rng.integers(0, len(x_all), task.spec.batch_size)
            p, s, loss = step(p, s, x_all[idx], y_all[idx])
        return loss

    first, best = time_call(loop, repeats=2)
    return {"seeds": 1, "steps": steps, "compile_and_first_s": first, "best_s": best,
            "inner_steps_per_s": steps / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    cfg = dict(CONFIG)
    if "fashion_mnist" not in lopt.tasks.datasets.available():
        cfg["dataset"] = "digits"
    task = lopt.tasks.build(cfg)
    rows = [{"impl": "lopt.inner.run_steps", **lopt_steps_per_second(task, n, args.steps)} for n in args.seeds]
    rows.append({"impl": "plain host loop (reference)", **plain_loop_steps_per_second(task, args.steps)})
    print(f"Adam on {cfg} ({task.num_params():,} params), device {jax.devices()[0].device_kind}")
    print(f"{'implementation':<30} {'seeds':>5} {'steps':>6} {'compile+1st (s)':>16} {'best (s)':>9} {'inner steps/s':>14}")
    for r in rows:
        print(f"{r['impl']:<30} {r['seeds']:>5} {r['steps']:>6} {r['compile_and_first_s']:>16.2f} "
              f"{r['best_s']:>9.3f} {r['inner_steps_per_s']:>14,.0f}")
    path = save("inner_training", {"task": cfg, "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
