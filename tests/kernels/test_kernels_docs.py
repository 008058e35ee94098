"""The examples in lopt.kernels' docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["lopt.kernels", "lopt.kernels.select", "lopt.kernels.tiles", "lopt.kernels.mlp_step", "lopt.kernels.mlp_kernels",
           "lopt.kernels.nominal_step"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, name
