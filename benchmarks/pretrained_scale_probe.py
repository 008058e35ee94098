"""Which step rules cope with the campaign's parameter scales? Scores hand-set ones on its validation.

Every validation (and training) variant of the campaign is reparameterised (``augmented``: params
stored as ``p / s`` with ``s`` log-uniform in [0.01, 100], globally, per tensor or per parameter),
so the best Adam learning rate differs by orders of magnitude between variants, while ``nominal``
(Adam's step ``lr`` with scale-free inputs) cannot see the scale. This scores, on the configs every
campaign theta is chosen on (:func:`lopt.pretrained.validate.validate`):

* ``adam1e-3``: Adam 1e-3 (= ``nominal``'s initial theta);
* ``tensor_relative{lr}``: Adam's direction times ``lr * max(rms(p), 1e-3)`` per tensor (LAMB or
  Adafactor's relative step);
* ``element_relative1e-2``: Adam's direction times ``1e-2 * (|p_i| + 0.1 rms(p))`` per entry;
* ``prodigy``: ``optax.contrib.prodigy(1.0)``;
* ``nominal_distance``: ``nominal`` with ``step_size="distance"`` at its initial theta.

Usage: python benchmarks/pretrained_scale_probe.py [--steps 300] [--tag ""]
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import optax
import optax.contrib

sys.path.insert(0, os.path.dirname(__file__))
from pretrained_schedule_probe import probe_main

from lopt.learned import NominalLOpt, base
from lopt.pretrained.validate import validate


def _rms(p: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(p.astype(jnp.float32))))


def _scaled_adam(step_size) -> optax.GradientTransformation:
    """Adam's direction times ``-step_size(param)`` (an array broadcast against the param)."""
    adam = optax.scale_by_adam()

    def update(grads, state, params):
        direction, state = adam.update(grads, state, params)
        return jax.tree.map(lambda d, p: -step_size(p) * d, direction, params), state

    return optax.GradientTransformation(adam.init, update)


RULES = {
    "adam1e-3": lambda: optax.adam(1e-3),
    "tensor_relative1e-2": lambda: _scaled_adam(lambda p: 1e-2 * jnp.maximum(_rms(p), 1e-3)),
    "tensor_relative3e-3": lambda: _scaled_adam(lambda p: 3e-3 * jnp.maximum(_rms(p), 1e-3)),
    "element_relative1e-2": lambda: _scaled_adam(lambda p: 1e-2 * (jnp.abs(p) + 0.1 * _rms(p) + 1e-6)),
    "prodigy": lambda: optax.contrib.prodigy(1.0),
}


@dataclasses.dataclass(frozen=True)
class HandSet(NominalLOpt):
    """A hand-set rule behind ``nominal``'s interface (its theta is unused), so ``validate`` can score it."""

    rule: str = "adam1e-3"

    def _build(self, theta, num_steps):
        opt = RULES[self.rule]()
        return base.Transform(opt.init, lambda grads, state, params, loss, valid_loss: opt.update(grads, state, params))


def score(steps: int) -> dict[str, dict[str, float]]:
    """Every rule of :data:`RULES`, then the distance-step ``nominal``, on the validation at ``steps``."""
    optimizers = {rule: HandSet(rule=rule) for rule in RULES} | {"nominal_distance": NominalLOpt(step_size="distance")}
    scores = {}
    for label, lopt_ in optimizers.items():
        scores.update(validate({label: lopt_.init(jax.random.key(0))}, steps=steps, lopt_=lopt_))
    return scores


def main(argv: list[str] | None = None) -> int:
    return probe_main("pretrained_scale_probe", __doc__, score, argv)


if __name__ == "__main__":
    raise SystemExit(main())
