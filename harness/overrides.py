"""Config overrides given as MMEngine ``cfg-options`` dotted keys, checked before use."""
import difflib
import re
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Tuple

import yaml
from mmengine.config import Config

from harness.strict_json import is_integer, is_number


def parse_assignments(assignments: List[str]) -> Dict[str, Any]:
    """``['a.b=1', 'c=[1, 2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``; values are read as YAML.

    Raises:
        ValueError: an item without ``=`` or without a key.
    """
    parsed = {}
    for item in assignments:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise ValueError(f'override {item!r} is not of the form key=value')
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ''
    return parsed


def dotted_keys(node: Any, prefix: str = '') -> Iterator[str]:
    """Every dotted key of a nested dict/list config (list items by index: ``a.0.b``)."""
    items: Iterable[Tuple[Any, Any]]
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        path = f'{prefix}{key}'
        yield path
        yield from dotted_keys(value, path + '.')


# The last part of the keys of integer settings (iterations, intervals, sizes, counts), where a
# float would fail inside MMEngine after training started; elsewhere ints and floats mix.
INTEGER_KEY = re.compile(r'(^|_)(iters?|interval|begin|end|batch_size|workers|max_keep_ckpts|'
                         r'num_iter)$|^num_')


def check_keys_exist(cfg: Config, options: Mapping[str, Any], source: str) -> None:
    """Raises ``KeyError`` for a key of ``options`` absent from ``cfg``, with near matches."""
    # MMEngine's merge_from_dict would silently add a misspelt key.
    known = set(dotted_keys(cfg.to_dict()))
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=5, cutoff=0.6)
            hint = f'; did you mean {near}?' if near else ''
            raise KeyError(f'override key {key!r} does not exist in {source}{hint}')


def check_value_types(cfg: Config, options: Mapping[str, Any], source: str) -> None:
    """Raises ``TypeError`` for a value whose type cannot replace the config's value there.

    ``None`` replaces and is replaced by anything; numbers take numbers (integers for
    :data:`INTEGER_KEY`); strings, booleans, lists and mappings take their own kind.
    """
    values = cfg.to_dict()
    for key, value in options.items():
        current = _lookup(values, key)
        expected = _expected_kind(key, current)
        if value is not None and expected is not None and not expected[1](value):
            raise TypeError(f'override {key}={value!r} does not fit {source}: {key} holds '
                            f'{current!r}, so the value must be {expected[0]}')


def _expected_kind(key: str, current: Any) -> Any:
    """``(description, predicate)`` of the values that may replace ``current``, or None."""
    if current is None:
        return None
    if isinstance(current, bool):
        return 'true or false', lambda v: isinstance(v, bool)
    if isinstance(current, int) and INTEGER_KEY.search(key.rsplit('.', 1)[-1]):
        return 'an integer', is_integer
    if is_number(current):
        return 'a number', is_number
    if isinstance(current, str):
        return 'a string', lambda v: isinstance(v, str)
    if isinstance(current, (list, tuple)):
        return 'a list', lambda v: isinstance(v, (list, tuple))
    if isinstance(current, Mapping):
        return 'a mapping', lambda v: isinstance(v, Mapping)
    return None


def _lookup(node: Any, key: str) -> Any:
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node


def apply_overrides(cfg: Config, options: Mapping[str, Any], source: str) -> Config:
    """Checks then merges ``options`` (dotted keys) into ``cfg`` in place; returns ``cfg``."""
    check_keys_exist(cfg, options, source)
    check_value_types(cfg, options, source)
    cfg.merge_from_dict(dict(options), allow_list_keys=True)
    return cfg
