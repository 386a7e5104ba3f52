"""Config overrides given as MMEngine ``cfg-options`` dotted keys, checked before use."""
import difflib
from typing import Any, Dict, Iterator, List, Mapping, Tuple

import yaml
from mmengine.config import Config


def parse_assignments(assignments: List[str]) -> Dict[str, Any]:
    """``['a.b=1', 'c=[1, 2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``; values are read as YAML.

    Raises ``ValueError`` for an item without ``=``.
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
    items: Iterator[Tuple[Any, Any]]
    if isinstance(node, Mapping):
        items = iter(node.items())
    elif isinstance(node, (list, tuple)):
        items = iter(enumerate(node))
    else:
        return
    for key, value in items:
        path = f'{prefix}{key}'
        yield path
        yield from dotted_keys(value, path + '.')


def check_keys_exist(cfg: Config, options: Mapping[str, Any], source: str) -> None:
    """Raises ``KeyError`` for a key of ``options`` absent from ``cfg``, with near matches.

    MMEngine's ``merge_from_dict`` would silently add a misspelt key; a sweep must not.
    """
    known = set(dotted_keys(cfg.to_dict()))
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=5, cutoff=0.6)
            hint = f'; did you mean {near}?' if near else ''
            raise KeyError(f'override key {key!r} does not exist in {source}{hint}')


def apply_overrides(cfg: Config, options: Mapping[str, Any], source: str) -> Config:
    """Checks then merges ``options`` (dotted keys) into ``cfg`` in place; returns ``cfg``."""
    check_keys_exist(cfg, options, source)
    cfg.merge_from_dict(dict(options), allow_list_keys=True)
    return cfg
