"""Integer settings read from environment variables, with one error for a bad value.

Example:
    >>> from lopt.env_settings import parse_count
    >>> parse_count("LOPT_EXAMPLE", " 3 ", minimum=1, expected="a positive integer")
    3
    >>> parse_count("LOPT_EXAMPLE", "two", minimum=1, expected="a positive integer")
    Traceback (most recent call last):
    ...
    ValueError: LOPT_EXAMPLE='two' must be a positive integer.
"""

from __future__ import annotations

__all__ = ["parse_count"]


def parse_count(name: str, value: str, *, minimum: int, expected: str) -> int:
    """``value`` (the text of variable ``name``) as an integer of at least ``minimum``.

    Args:
        name: the variable, for the error.
        value: its text (surrounding blanks ignored).
        minimum: the smallest value accepted.
        expected: what the error says the value must be (e.g. ``"a positive integer"``).

    Raises:
        ValueError: ``value`` is not an integer, or is below ``minimum``.
    """
    try:
        count = int(value.strip())
    except ValueError:
        count = None
    if count is None or count < minimum:
        raise ValueError(f"{name}={value!r} must be {expected}.")
    return count
