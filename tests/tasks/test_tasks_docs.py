"""The docstring examples of lopt.tasks run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lopt.tasks

MODULES = sorted(m.name for m in pkgutil.walk_packages(lopt.tasks.__path__, "lopt.tasks."))


@pytest.mark.parametrize("name", ["lopt.tasks", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
