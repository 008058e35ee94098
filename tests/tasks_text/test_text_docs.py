"""The docstring examples of the text datasets, RNN cells and text families run as claimed."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["lopt.tasks.datasets.text", "lopt.tasks.families.rnn", "lopt.tasks.families.language"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} failed in {name}"
