"""Fixtures for the text-task tests: a cheaply compiled first loss."""

from __future__ import annotations

import jax
import pytest

# Many small programs are compiled once each; XLA's CPU optimisations cost more than they save.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _first_loss(task, key):
    init_key, batch_key = jax.random.split(key)
    return task.loss(task.init(init_key), task.sample_batch(batch_key, "train"))


_first_loss_jit = jax.jit(_first_loss, compiler_options=_FAST_COMPILE)


@pytest.fixture
def first_loss():
    """``first_loss(task, key)``: init + loss on one training batch, compiled quickly for the CPU."""
    return _first_loss_jit
