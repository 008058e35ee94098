"""The CPU-sized task mixture of the self-training benchmark (``self_training.py --config mixture``).

The ``canonical`` config trains on one task. The mixture variant keeps its estimator and
horizons (PES, unrolls of 50 in 1,000-step inner trainings) and trains on one fixed, small
structure per family, in every outer step (lopt's mixture engine,
:class:`lopt.meta.MixtureEngine`):

* ``quadratic``: a 10-dimensional quadratic (condition number, rotation, noise, init scale and
  seed vary between variants);
* ``mlp``: the canonical MLP 64-32-10 on 8x8 Fashion-MNIST (digits where Fashion-MNIST is not
  installed; init scale varies);
* ``losg``: the 2-D test functions of Wichrowska et al. 2017 (Rosenbrock, Ackley, Beale, ...:
  the problem itself, noise, sparse gradients, log objective and seed vary).

Every structure is wrapped as a mixture wraps it (``augmented``: weight reparameterisation and
loss scale vary too). ``heldout_per_bucket`` variants of each structure are set aside before any
training draw, from ``task.heldout_seed`` = 0, so every run, whatever its seed, is validated on
the same held-out variants, which no run trains on.

Example:
    >>> overrides = mixture_overrides("quadratic,losg", heldout_per_bucket=1)
    >>> [o.split("=", 1)[0] for o in overrides][:3]
    ['task.mixture', 'task.structures', 'task.num_buckets']
"""

from __future__ import annotations

import json

import lopt

#: The structure each family contributes (before the ``augmented`` wrapper).
STRUCTURES: dict[str, dict] = {
    "quadratic": {"family": "quadratic", "dim": 10},
    "mlp": {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32],
            "activation": "relu", "batch_size": 128},
    "losg": {"family": "losg", "problem": "rosenbrock"},
}
DEFAULT_FAMILIES = "quadratic,mlp,losg"


def parse_families(families: str) -> list[str]:
    """The comma-separated family names of ``--families``, checked.

    Raises:
        ValueError: an empty list, a repeated name, or a family without a CPU-sized structure
            here, naming the valid ones.
    """
    names = [f.strip() for f in families.split(",") if f.strip()]
    if not names:
        raise ValueError(f"--families={families!r} names no family; use some of {sorted(STRUCTURES)}, "
                         f"e.g. --families {DEFAULT_FAMILIES}.")
    unknown = [f for f in names if f not in STRUCTURES]
    if unknown:
        raise ValueError(f"--families: {unknown} have no CPU-sized structure in the self-training mixture; "
                         f"use some of {sorted(STRUCTURES)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"--families={families!r} repeats a family; name each once.")
    return names


def structure(family: str) -> dict:
    """The ``augmented`` structure config of ``family`` (Fashion-MNIST falls back to digits)."""
    inner = dict(STRUCTURES[family])
    if inner.get("dataset") == "fashion_mnist" and "fashion_mnist" not in lopt.tasks.datasets.available():
        inner["dataset"] = "digits"
    inner = lopt.tasks.get(family).complete(inner).to_dict()
    return lopt.tasks.get("augmented").complete({"task": inner, "batch_size": None, "precision": "float32"}).to_dict()


def mixture_overrides(families: str = DEFAULT_FAMILIES, *, heldout_per_bucket: int = 2,
                      configs_per_bucket: int = 4, redraw_every: int = 50) -> list[str]:
    """``--set`` overrides that turn the ``canonical`` config into the benchmark's mixture.

    Args:
        families: comma-separated families of :data:`STRUCTURES` (one structure, one bucket each).
        heldout_per_bucket: held-out variants per structure (>= 1: the benchmark validates on them).
        configs_per_bucket: training variants per pool half.
        redraw_every: outer steps between re-draws of a pool half (50 x unroll 50 covers the
            1,000-step horizon).

    Raises:
        ValueError: bad families (see :func:`parse_families`) or ``heldout_per_bucket < 1``.
    """
    names = parse_families(families)
    if isinstance(heldout_per_bucket, bool) or not isinstance(heldout_per_bucket, int) or heldout_per_bucket < 1:
        raise ValueError(f"--heldout-per-bucket={heldout_per_bucket!r}: the mixture benchmark validates on held-out "
                         "variants of every structure; use an integer >= 1 (e.g. 2).")
    return [f"task.mixture={json.dumps({f: 1 for f in names})}",
            f"task.structures={json.dumps([structure(f) for f in names])}",
            f"task.num_buckets={len(names)}", f"task.configs_per_bucket={configs_per_bucket}",
            f"task.redraw_every={redraw_every}", f"task.heldout_per_bucket={heldout_per_bucket}",
            "task.heldout_seed=0"]
