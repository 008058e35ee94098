"""Helpers shared by the task-distribution tests (imported with ``sys.path`` set to this folder)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
