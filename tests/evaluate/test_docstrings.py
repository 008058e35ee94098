"""The docstring examples of lopt.evaluate run as written."""

import doctest
import importlib

import pytest

LIGHT = ["metrics", "optimizer_spec", "baselines", "suites", "results", "analysis", "report"]
TRAINING = ["runner", "__init__"]


def _run(name):
    module = importlib.import_module("lopt.evaluate" if name == "__init__" else f"lopt.evaluate.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring examples of {module.__name__} failed"


@pytest.mark.parametrize("name", LIGHT)
def test_docstring_examples(name):
    _run(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING)
def test_docstring_examples_that_train(name):
    _run(name)
