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


def test_an_optimizer_given_the_groups_decays_only_the_decay_group():
    model = build_model(mnv2.reference(0.5, 32), num_classes=10)
    groups = param_groups(model, 0.1)
    opt = torch.optim.SGD(groups, lr=0.5)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    for p, old in zip(model.parameters(), before, strict=True):
        # plain SGD: p - lr * (grad + weight_decay * p), the decay term in the decay group only
        expected = old - 0.5 * (p.grad + (0.1 * old if id(p) in decayed else 0.0))
        torch.testing.assert_close(p.detach(), expected)
    assert len([m for m in model.modules() if is_depthwise(m)]) == 17
