"""Fixtures shared by the task tests (slow tests here are opt-in: see tests/conftest.py)."""

from __future__ import annotations

import jax
import pytest

import lopt
from lopt.tasks import datasets


def fashion_installed() -> bool:
    """Whether the Fashion-MNIST IDX files are on this machine."""
    try:
        datasets.load("fashion_mnist", 8)
    except datasets.DatasetNotFoundError:
        return False
    return True


@pytest.fixture
def needs_fashion():
    """Skips the test when Fashion-MNIST is not installed."""
    if not fashion_installed():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist).")


def _cheap_config(cfg):
    """The same config at the smallest image size that is valid for it and a batch of <= 16.

    Image families keep their structure (depth, widths, strides, paddings, dataset); only the
    cost knobs shrink. Other families are returned unchanged.
    """
    if "image_size" not in cfg:
        return cfg
    family = lopt.tasks.get(cfg["family"])
    for size in datasets.IMAGE_SIZES:
        try:
            return family.complete(cfg.replace(image_size=size, batch_size=min(cfg["batch_size"], 16)))
        except ValueError:
            continue
    raise AssertionError(f"no image size is valid for {cfg}")


# Many small programs are compiled once each; XLA's CPU backend optimisations cost far more
# than they save here (3-10x faster tests), and these tests check values, not speed.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _fast_jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=_FAST_COMPILE, **kwargs)


@_fast_jit
def _first_loss(task, key):
    init_key, batch_key = jax.random.split(key)
    return task.loss(task.init(init_key), task.sample_batch(batch_key, "train"))


@pytest.fixture
def cheap_config():
    """``cheap_config(cfg)``: ``cfg`` at its smallest valid image size and batch <= 16."""
    return _cheap_config


@pytest.fixture
def first_loss():
    """``first_loss(task, key)``: init + loss on one training batch, compiled quickly for the CPU."""
    return _first_loss


@pytest.fixture
def fast_jit():
    """``jax.jit`` with cheap CPU compiler options (same semantics and caching)."""
    return _fast_jit
