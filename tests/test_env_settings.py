"""Integer environment settings: accepted values, and the error naming the variable and the value."""

import doctest

import pytest

from lopt import env_settings
from lopt.env_settings import parse_count


def test_accepts_integers_at_or_above_the_minimum():
    assert parse_count("X", "0", minimum=0, expected="e") == 0
    assert parse_count("X", " 16\n", minimum=1, expected="e") == 16


@pytest.mark.parametrize("value", ["-1", "many", "1.5", ""])
def test_refuses_the_rest_naming_variable_value_and_expectation(value):
    with pytest.raises(ValueError) as err:
        parse_count("LOPT_X", value, minimum=0, expected="a non-negative integer")
    assert str(err.value) == f"LOPT_X={value!r} must be a non-negative integer."


def test_docstring_example_runs():
    assert doctest.testmod(env_settings).failed == 0
