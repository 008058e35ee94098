"""The docstring examples of lopt.tasks run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

# The task contract, the datasets and the image families. Families still being written elsewhere
# (text, generative) are left out until their examples are final; add each module here as it is.
MODULES = [
    "lopt.tasks",
    "lopt.tasks.base",
    "lopt.tasks.catalogue",
    "lopt.tasks.classification",
    "lopt.tasks.config",
    "lopt.tasks.cost_cache",
    "lopt.tasks.cost_workers",
    "lopt.tasks.datasets.catalog",
    "lopt.tasks.datasets.dataset",
    "lopt.tasks.datasets.idx",
    "lopt.tasks.datasets.images",
    "lopt.tasks.families.conv",
    "lopt.tasks.families.mlp",
    "lopt.tasks.families.quadratic",
    "lopt.tasks.family",
    "lopt.tasks.layers",
    "lopt.tasks.sampling",
    "lopt.tasks.stacking",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
