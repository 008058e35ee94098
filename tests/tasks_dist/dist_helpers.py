"""Helpers shared by the task-distribution tests (imported with ``sys.path`` set to this folder)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from lopt.tasks import datasets

#: The families these tests are about.
NEW_FAMILIES = ("losg", "mlp_ae", "mlp_vae", "nvp", "maf", "fixed", "augmented")

#: Many small programs are compiled once each; XLA's CPU optimisations cost more than they save.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn, **kwargs):
    """``jax.jit`` with cheap CPU compiler options (same semantics and caching)."""
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


@fast_jit
def first_loss(task, key):
    """Init + loss on one training batch."""
    init_key, batch_key = jax.random.split(key)
    return task.loss(task.init(init_key), task.sample_batch(batch_key, "train"))


def first_losses(tasks, key):
    """``first_loss`` of each task (one small program per structure; one big one compiles slower)."""
    return jnp.stack([first_loss(task, jax.random.fold_in(key, i)) for i, task in enumerate(tasks)])


@functools.cache
def fashion_installed() -> bool:
    """Whether the Fashion-MNIST IDX files are on this machine."""
    try:
        datasets.load("fashion_mnist", 8)
    except datasets.DatasetNotFoundError:
        return False
    return True


#: Marks a test that builds sampled image configs (some of which use Fashion-MNIST).
needs_fashion = pytest.mark.skipif(not fashion_installed(), reason="Fashion-MNIST is not installed "
                                   "(apt-get install dataset-fashion-mnist).")
