"""Random quadratics with a known minimum, optionally with noisy gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lopt.host_transfer import to_device
from lopt.tasks.base import Task, TaskSpec, check_split
from lopt.tasks.config import TaskConfig
from lopt.tasks.family import TaskFamily
from lopt.tasks.sampling import choice, log_uniform, log_uniform_int

__all__ = ["QuadraticFamily", "QuadraticSpec", "QuadraticTask"]


@dataclasses.dataclass(frozen=True)
class QuadraticSpec(TaskSpec):
    """Static structure: the dimension."""

    dim: int = 10


class QuadraticTask(Task):
    """``f(x) = 0.5 (x - x*)^T A (x - x*)`` with minimum 0 at ``x* = settings["optimum"]``.

    Training batches are gradient noise: the training loss adds ``noise * <eps, x - x*>`` with
    ``eps ~ N(0, I)``, so gradients are unbiased but noisy while the expected loss is the exact
    quadratic. Validation and test batches carry no noise (they measure the exact loss).

    Settings (dynamic): ``matrix`` ``[dim, dim]`` (symmetric positive definite), ``optimum``
    ``[dim]``, ``noise`` and ``init_scale`` scalars.
    """

    def init(self, key):
        x = jax.random.normal(key, (self.spec.dim,)) * self.settings["init_scale"]
        return {"x": x}

    def sample_batch(self, key, split="train"):
        eps = jax.random.normal(key, (self.spec.dim,))
        return {"noise": eps if check_split(split) == "train" else jnp.zeros_like(eps)}

    def loss(self, params, batch):
        delta = params["x"] - self.settings["optimum"]
        exact = 0.5 * delta @ (self.settings["matrix"] @ delta)
        return exact + self.settings["noise"] * jnp.vdot(batch["noise"], delta)


class QuadraticFamily(TaskFamily):
    """Random quadratics: eigenvalues log-spaced up to a sampled condition number.

    ``A = Q diag(lambda) Q^T`` with ``Q`` a random rotation (or the identity when
    ``rotate=False``) and ``lambda`` log-spaced from ``1/condition_number`` to 1; the optimum is
    drawn from ``N(0, I)``. Everything random is drawn from ``cfg["seed"]``.
    """

    name = "quadratic"
    description = "Random quadratic with known minimum 0 (optionally noisy gradients)."

    def defaults(self):
        return {"dim": 10, "condition_number": 10.0, "rotate": True, "noise": 0.0,
                "init_scale": 1.0, "seed": 0}

    def sampling_ranges(self):
        return {"dim": "log-uniform integer in [2, 1000]",
                "condition_number": "log-uniform in [1, 10^4]",
                "rotate": "True or False", "noise": "0 (half the time) or log-uniform in [0.01, 1]",
                "init_scale": "1", "seed": "uniform integer in [0, 2^31)"}

    def sample_config(self, rng):
        return {"dim": log_uniform_int(rng, 2, 1000),
                "condition_number": log_uniform(rng, 1.0, 1e4),
                "rotate": bool(choice(rng, [True, False])),
                "noise": 0.0 if rng.uniform() < 0.5 else log_uniform(rng, 0.01, 1.0),
                "seed": int(rng.integers(2**31))}

    def validate(self, cfg: TaskConfig):
        if isinstance(cfg["dim"], bool) or not isinstance(cfg["dim"], int) or cfg["dim"] < 1:
            raise ValueError(f"quadratic: dim={cfg['dim']!r} must be a positive integer.")
        for key in ("condition_number", "noise", "init_scale"):
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"quadratic: {key}={value!r} must be a number.")  # noqa: TRY004
        if cfg["condition_number"] < 1:
            raise ValueError(f"quadratic: condition_number={cfg['condition_number']} must be >= 1.")
        for key in ("noise", "init_scale"):
            if cfg[key] < 0:
                raise ValueError(f"quadratic: {key}={cfg[key]} must be >= 0.")
        if not isinstance(cfg["rotate"], bool):
            raise ValueError(f"quadratic: rotate={cfg['rotate']!r} must be True or False.")  # noqa: TRY004
        if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int) or cfg["seed"] < 0:
            raise ValueError(f"quadratic: seed={cfg['seed']!r} must be a non-negative integer.")

    def make_task(self, cfg):
        rng = np.random.default_rng(cfg["seed"])
        dim = cfg["dim"]
        eigenvalues = np.logspace(-np.log10(cfg["condition_number"]), 0.0, dim)
        if cfg["rotate"]:
            q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
            matrix = (q * eigenvalues) @ q.T
            matrix = 0.5 * (matrix + matrix.T)
        else:
            matrix = np.diag(eigenvalues)
        settings = {
            "matrix": to_device(matrix, np.float32),
            "optimum": to_device(rng.normal(size=dim), np.float32),
            "noise": jnp.float32(cfg["noise"]),
            "init_scale": jnp.float32(cfg["init_scale"]),
        }
        return QuadraticTask(QuadraticSpec(family=self.name, batch_size=1, dim=dim), None, settings)
