"""The runnable examples in the analysis modules' docstrings."""

import doctest
import importlib

import pytest

# Modules by name: several share their name with the function they export (lopt.analysis.clipping).
MODULES = ["lopt.analysis", "lopt.analysis.adaptation", "lopt.analysis.chaotic_task", "lopt.analysis.clipping",
           "lopt.analysis.implicit_regularization", "lopt.analysis.layout", "lopt.analysis.rest_drift", "lopt.analysis.schedule",
           "lopt.analysis.subject", "lopt.analysis.timescales", "lopt.analysis.trace", "lopt.analysis.update_function"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
