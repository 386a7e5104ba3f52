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


@pytest.mark.parametrize('key,value,expected', [
    ('train_cfg.max_iters', 'abc', 'must be an integer'),
    ('train_cfg.max_iters', 1.5, 'must be an integer'),
    ('optimizer.lr', 'fast', 'must be a number'),
    ('optimizer.lr', True, 'must be a number'),
    ('model.type', 3, 'must be a string'),
    ('model.flip', 'yes', 'must be true or false'),
    ('model.scales', 0.5, 'must be a list'),
    ('model', 'EPS', 'must be a mapping'),
])
def test_values_of_another_type_are_errors(key, value, expected):
    cfg = Config(dict(train_cfg=dict(max_iters=600), optimizer=dict(lr=0.01, eta_min=0),
                      model=dict(type='EPSClassifier', flip=False, scales=[1.0], pretrained='x')))
    with pytest.raises(TypeError, match=f'override {key}=.*{expected}'):
        apply_overrides(cfg, {key: value}, source='cfg.py')


def test_numbers_interchange_none_switches_off_and_none_takes_anything():
    cfg = Config(dict(train_cfg=dict(max_iters=600), optimizer=dict(lr=0.01, eta_min=0),
                      model=dict(pretrained='open-mmlab://resnet101_v1c'), load_from=None))
    apply_overrides(cfg, {'optimizer.lr': 1, 'optimizer.eta_min': 1e-5, 'model.pretrained': None,
                          'load_from': 'iter_8.pth'}, source='cfg.py')
    assert (cfg.optimizer.lr, cfg.optimizer.eta_min) == (1, 1e-5)
    assert cfg.model.pretrained is None and cfg.load_from == 'iter_8.pth'
