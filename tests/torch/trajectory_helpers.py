"""Shared by the PyTorch-vs-JAX tests: a problem (params, gradients, losses) and a perturbed theta."""

import jax
import numpy as np

SHAPES = {"conv": (3, 2, 3, 4), "w": (5, 7), "b": (7,), "s": ()}
GRAD_SCALES = {"conv": 0.3, "w": 1.0, "b": 0.01, "s": 3.0}
NUM_STEPS = 100


def perturbed_theta(lopt_, seed):
    """``init(key)`` plus noise: a theta no test could pass by symmetry or zero weights."""
    theta = lopt_.init(jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(theta)
    rng = np.random.default_rng(seed)
    noisy = []
    for leaf in leaves:
        leaf = np.asarray(leaf, np.float32)
        scale = 0.2 if leaf.ndim == 0 else 0.2 * max(float(leaf.std()), 0.5)
        noisy.append((leaf + scale * rng.standard_normal(leaf.shape)).astype(np.float32))
    return jax.tree.unflatten(treedef, noisy)


def problem(seed):
    """Initial params, ``NUM_STEPS`` gradients per tensor and a loss sequence (numpy float32)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    drift = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = {
        k: (
            GRAD_SCALES[k]
            * (0.5 * drift[k] + rng.standard_normal((NUM_STEPS, *s)))
            * np.exp(-np.arange(NUM_STEPS) / 60.0).reshape(-1, *[1] * len(s))
        ).astype(np.float32)
        for k, s in SHAPES.items()
    }
    losses = (2.0 * np.exp(-np.arange(NUM_STEPS) / 40.0) + 0.1 * rng.random(NUM_STEPS)).astype(
        np.float32
    )
    return params, grads, losses
