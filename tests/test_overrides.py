import pytest
from mmengine.config import Config

from harness.overrides import apply_overrides, dotted_keys, parse_assignments


def test_parse_assignments_reads_yaml_values():
    assert parse_assignments(['a.b=1', 'c=[1, 2]', 'd=1/8', 'e=x']) == {
        'a.b': 1, 'c': [1, 2], 'd': '1/8', 'e': 'x'}


def test_assignment_without_equals_is_an_error():
    with pytest.raises(ValueError, match="'a.b' is not of the form key=value"):
        parse_assignments(['a.b'])


def test_dotted_keys_include_list_indices():
    assert set(dotted_keys({'a': {'b': [{'c': 1}]}})) == {'a', 'a.b', 'a.b.0', 'a.b.0.c'}


def test_existing_keys_are_merged():
    cfg = Config(dict(model=dict(loss=dict(tau=0.4)), hooks=[dict(type='A', x=1)]))
    apply_overrides(cfg, {'model.loss.tau': 0.3, 'hooks.0.x': 2}, source='cfg.py')
    assert cfg.model.loss.tau == 0.3 and cfg.hooks[0].x == 2


def test_unknown_key_is_an_error_with_near_matches():
    cfg = Config(dict(model=dict(loss_sal=dict(threshold=0.5))))
    with pytest.raises(KeyError, match=r"'model.loss_sal.treshold' does not exist in cfg.py; "
                       r"did you mean \['model.loss_sal.threshold'"):
        apply_overrides(cfg, {'model.loss_sal.treshold': 0.4}, source='cfg.py')
    assert 'treshold' not in cfg.model.loss_sal
