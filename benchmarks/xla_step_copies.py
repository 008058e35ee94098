"""What an optimizer's plain XLA step copies, and what that costs: one donated step and a loop of steps.

A step whose state is donated (deployment) or carried through a loop (``lopt.inner.train``, a
meta-training unroll) can write each new accumulator where the old one was. XLA copies an old
buffer first whenever some kernel still reads it after the new value could be written there; a
copy reads and writes the whole array, so a copied momentum costs as much memory traffic as the
step's own read of it. ``optax.adam`` copies nothing. This script compiles, per optimizer, a donated
``update + apply_updates`` step and a ``fori_loop`` of ``--loop`` such steps on an 8-layer model
(``step_overhead.make_params``), counts the copies of the compiled programs (``hlo_summary``; in the
loop, those of its body: the loop's entry copies its arguments once) and times both.

Usage:
    python benchmarks/xla_step_copies.py [--size 2e6] [--optimizers adam pretrained mlp nominal]

Saves ``results/xla_step_copies_<device>.json`` (never over an earlier file).

Example:
    >>> row = measure("adam", make_params(2000), loop=2, repeats=1)
    >>> row["step_copies"], round(row["loop_copy_MB_per_step"], 3)  # in the loop: its counter
    (0, 0.0)
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(__file__))
import hlo_summary
from common import refuse_existing_out, save, time_call
from step_overhead import make_params

import lopt


def build(name: str, horizon: int = 1000) -> optax.GradientTransformationExtraArgs:
    """``optax.adam(1e-3)``, the pretrained optimizer, or a registered architecture at its init."""
    if name == "adam":
        return optax.adam(1e-3)
    if name == "pretrained":
        return lopt.pretrained.optimizer(num_steps=horizon)
    arch = lopt.learned.get(name)
    return arch.optimizer(arch.init(jax.random.key(0)), num_steps=horizon)


def measure(name: str, params: dict, *, loop: int = 20, repeats: int = 3) -> dict:
    """Copies and milliseconds of ``name``'s donated step and of a loop of ``loop`` steps."""
    opt = build(name)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 1e-3, p.dtype), params)

    def step(p, s, g):
        updates, s = opt.update(g, s, p, loss=jnp.float32(1.0))
        return optax.apply_updates(p, updates), s

    def unroll(p, s):
        def body(i, carry):
            p, s = carry
            g = jax.tree.map(lambda x: jnp.sin(x + i.astype(x.dtype)) * 1e-3, p)  # a new gradient each step
            return step(p, s, g)
        return jax.lax.fori_loop(0, loop, body, (p, s))

    state = opt.init(params)
    one = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    many = jax.jit(unroll).lower(params, state).compile()
    s1, sn = hlo_summary.summarise(one.as_text()), hlo_summary.summarise(many.as_text())
    # copies: the donated step deletes its arguments, and a state may hold the params themselves
    carry = [jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, opt.init(params))]

    def donated():
        carry[0], carry[1] = one(carry[0], carry[1], grads)
        return carry[0]

    _, step_s = time_call(donated, repeats=repeats)
    _, loop_s = time_call(lambda: many(params, state)[0], repeats=repeats)
    return {"optimizer": name, "params": sum(x.size for x in jax.tree.leaves(params)),
            "step_copies": s1["copies"], "step_copy_MB": s1["copy_bytes"] / 1e6, "step_ms": step_s * 1e3,
            "loop_steps": loop, "loop_copies_per_step": sn["loop_copies"] / loop,
            "loop_copy_MB_per_step": sn["loop_copy_bytes"] / loop / 1e6,
            "loop_ms_per_step": loop_s * 1e3 / loop, "step_copy_shapes": s1["copy_shapes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=float, default=2e6, help="parameters, in 8 layers")
    parser.add_argument("--optimizers", nargs="+", default=["adam", "pretrained", "nominal", "mlp"])
    parser.add_argument("--loop", type=int, default=20, help="steps in the timed loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    params, rows = make_params(int(args.size)), []
    print(f"{'optimizer':>12} {'step copies':>12} {'MB':>7} {'ms':>8} {'in a loop, a step:':>19} {'copies':>7} "
          f"{'MB':>7} {'ms':>8}")
    for name in args.optimizers:
        rows.append(r := measure(name, params, loop=args.loop, repeats=args.repeats))
        print(f"{name:>12} {r['step_copies']:>12} {r['step_copy_MB']:>7.1f} {r['step_ms']:>8.2f} "
              f"{'':>19} {r['loop_copies_per_step']:>7.1f} {r['loop_copy_MB_per_step']:>7.1f} "
              f"{r['loop_ms_per_step']:>8.2f}", flush=True)
    path = save("xla_step_copies", {"benchmark": "xla_step_copies", "size": args.size, "results": rows},
                args.out)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
