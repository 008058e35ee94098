"""The docstring examples of the task-distribution modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lopt.tasks.augment",
    "lopt.tasks.budget",
    "lopt.tasks.mixture",
    "lopt.tasks.families.fixed",
    "lopt.tasks.families.flows",
    "lopt.tasks.families.generative",
    "lopt.tasks.families.losg",
    "lopt.cli.tasks_command",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
