"""JSON that strict parsers read: no ``NaN`` or ``Infinity``, numpy scalars as plain numbers.

mmseg gives IoU ``NaN`` for a class absent from both the ground truth and the predictions, and
``json.dumps`` writes that as ``NaN``, which ``jq``, JavaScript's ``JSON.parse`` and most JSON
libraries reject. Here a non-finite number becomes ``null``: "no value", which is what an absent
class's IoU is.
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


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``; raises ValueError if a NaN slipped through."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
