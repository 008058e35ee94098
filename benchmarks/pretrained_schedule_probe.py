"""Do hand-set schedules beat the campaign's starting point? Scores them on the campaign's validation.

Builds ``nominal`` thetas that are plain Adam at a learning rate with a flat or cosine
(decay to 2%) learned-schedule, plus the shipped weights with that cosine added, and scores them
with :func:`lopt.pretrained.validate.validate` (the configs every campaign theta is chosen on).
A hand-set schedule that wins would be the better place to start meta-training from.

Usage: python benchmarks/pretrained_schedule_probe.py [--steps 300] [--tag ""]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, save

from lopt.learned import get as get_lopt
from lopt.pretrained import load as load_pretrained
from lopt.pretrained.validate import validate


def cosine_log_schedule(knots: int, floor: float = 0.02) -> np.ndarray:
    """The log of a cosine decay from 1 to ``floor`` at ``knots`` evenly spaced fractions of training."""
    tau = np.linspace(0.0, 1.0, knots)
    return np.log(floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * tau))).astype(np.float32)


def candidates() -> dict:
    lopt_ = get_lopt("nominal")
    base = lopt_.init(jax.random.key(0))
    cosine = jnp.asarray(cosine_log_schedule(lopt_.schedule_knots))
    out = {}
    for lr in (1e-3, 2e-3):
        out[f"adam{lr:g}"] = dict(base, log_lr=jnp.asarray(math.log(lr), jnp.float32))
    for lr in (1e-3, 2e-3, 3e-3):
        out[f"cos{lr:g}"] = dict(base, log_lr=jnp.asarray(math.log(lr), jnp.float32), schedule=cosine)
    shipped, _ = load_pretrained()
    out["shipped+cos"] = dict(shipped, schedule=shipped["schedule"] + cosine)
    return out


def probe_main(name: str, description: str, score, argv: list[str] | None = None) -> int:
    """A validation probe's command line: ``score(steps) -> {label: scores}``, printed best first, saved.

    ``--steps`` (default 300) is the validation length; the scores go to
    ``results/<name><--tag>_<device>.json``.
    """
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    start = time.time()
    scores = score(args.steps)
    width = max(map(len, scores))
    for label, row in sorted(scores.items(), key=lambda item: item[1]["heldout_normalized_loss"]):
        print(f"{row['heldout_normalized_loss']:.4f}  {label:{width}s} " +
              " ".join(f"{k[8:]}={v:.3f}" for k, v in row.items() if k.startswith("heldout/")), flush=True)
    save(f"{name}{args.tag}", {"environment": environment(), "args": vars(args),
                               "seconds": time.time() - start, "scores": scores})
    return 0


def main(argv: list[str] | None = None) -> int:
    return probe_main("pretrained_schedule_probe", __doc__, lambda steps: validate(candidates(), steps=steps), argv)


if __name__ == "__main__":
    raise SystemExit(main())
