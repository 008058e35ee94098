"""The docstring examples of the issue-16 modules run as written."""

import doctest
import importlib

import pytest

MODULES = ["lopt.meta.interrupts", "lopt.meta.config_checks", "lopt.evaluate.stability", "lopt.learned.base"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
