"""Checks of the components' numeric arguments: Python counts ``True`` and ``False`` as integers,
a config value that is a bool is not a number here."""
from numbers import Integral, Real


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)
