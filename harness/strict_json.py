"""JSON that strict parsers read: no ``NaN`` or ``Infinity``, numpy scalars as plain numbers.

mmseg gives IoU ``NaN`` for a class absent from both the ground truth and the predictions, and
``json.dumps`` writes that as ``NaN``, which ``jq``, JavaScript's ``JSON.parse`` and most JSON
libraries reject. Here a non-finite number becomes ``null``: "no value", which is what an absent
class's IoU is. :func:`is_integer` and :func:`is_number` say which values count as numbers
(``true``/``false`` are Python bools, which Python counts as integers).
"""
import json
import math
import numbers
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None and numpy numbers made Python ones
    (recursively through dicts, lists and tuples)."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``; raises ValueError if a NaN slipped through."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
