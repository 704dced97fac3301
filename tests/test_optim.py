import torch
from torch import nn

from nas.model.builder import build_model
from nas.model.optim import is_depthwise, param_groups
from search_spaces import get_space, mnv2, xception


def test_every_depthwise_weight_bn_and_bias_is_excluded_from_decay():
    for g in (mnv2.REFERENCE, xception.reference(0.5, 64), get_space("mnv1").sample(3)):
        model = build_model(g, num_classes=10)
        decay, no_decay = param_groups(model, 4e-5)
        assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
        ids_decay = {id(p) for p in decay["params"]}
        ids_none = {id(p) for p in no_decay["params"]}
        assert not ids_decay & ids_none
        assert ids_decay | ids_none == {id(p) for p in model.parameters()}
        for m in model.modules():
            if is_depthwise(m):
                assert id(m.weight) in ids_none
            elif isinstance(m, nn.Conv2d):
                assert id(m.weight) in ids_decay
            if isinstance(m, nn.BatchNorm2d):
                assert {id(m.weight), id(m.bias)} <= ids_none
        assert id(model.classifier.bias) in ids_none
        assert id(model.classifier.weight) in ids_decay


def test_groups_work_with_an_optimizer():
    model = build_model(mnv2.reference(0.5, 32), num_classes=10)
    opt = torch.optim.SGD(param_groups(model, 1e-4), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    dw = [m for m in model.modules() if is_depthwise(m)]
    assert len(dw) == 17
