"""Every docstring example in the ``lopt`` package runs and prints what it shows.

The examples are the first code a user copies; this runs them module by module (so pytest's
workers share them out) with plain ``doctest``, importing each module the normal way.
"""

import doctest
import importlib
import pkgutil

import pytest

import lopt


def _modules() -> list[str]:
    names = ["lopt"]
    for info in pkgutil.walk_packages(lopt.__path__, prefix="lopt."):
        if not info.name.endswith(".__main__"):  # importing one runs its command line
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_the_package_has_examples_to_run():
    finder = doctest.DocTestFinder()
    with_examples = [name for name in MODULES
                     if any(t.examples for t in finder.find(importlib.import_module(name)))]
    assert len(with_examples) > 50, with_examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
