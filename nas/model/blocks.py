"""Torch modules for every block type. Imports torch only.

Each block takes explicit arguments; `from_spec` maps one resolved block instance of
a genotype (anything with the fields of `nas.arch.genotype.BlockSpec`) onto them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.arch.blocktypes import xc_channels

__all__ = [
    "ConvBNAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "Network",
    "SeparableConv",
    "XceptionBlock",
    "activation",
]

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "silu": nn.SiLU}


def activation(name: str, inplace: bool = True) -> nn.Module:
    """The activation module called `name` (relu, relu6, hswish, silu)."""
    try:
        return _ACTIVATIONS[name](inplace=inplace)
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(_ACTIVATIONS)}") from None


class ConvBNAct(nn.Module):
    """conv (no bias) + BN, then the activation when `act` is given."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None,
                 groups: int = 1, act: str | None = None):
        super().__init__()
        pad = k // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv(nn.Module):
    """Depthwise k x k and pointwise 1x1 (in `order`), then BN; no BN between the halves.

    `pre`, `mid` and `post` put the activation before the unit, between its halves and
    after its BN (Xception uses pre only).
    """

    def __init__(self, cin: int, cout: int, k: int, act: str, order: str = "dp",
                 pre: bool = False, mid: bool = False, post: bool = False):
        super().__init__()
        # The input may also feed a shortcut, so the pre-activation must not be in place.
        self.pre = activation(act, inplace=False) if pre else nn.Identity()
        self.order = order
        if order == "dp":
            self.dw = nn.Conv2d(cin, cin, k, 1, k // 2, groups=cin, bias=False)
            self.mid = activation(act) if mid else nn.Identity()
            self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        elif order == "pd":
            self.pw = nn.Conv2d(cin, cout, 1, bias=False)
            self.mid = activation(act) if mid else nn.Identity()
            self.dw = nn.Conv2d(cout, cout, k, 1, k // 2, groups=cout, bias=False)
        else:
            raise ValueError(f"unknown order {order!r}; valid: dp, pd")
        self.bn = nn.BatchNorm2d(cout)
        self.post = activation(act) if post else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        if self.order == "dp":
            x = self.pw(self.mid(self.dw(x)))
        else:
            x = self.dw(self.mid(self.pw(x)))
        return self.post(self.bn(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (if t > 1), k x k depthwise, 1x1 linear projection.

    `place` holds e/d/p for an activation after expansion, depthwise and projection.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, t: int, act: str,
                 place: str, shortcut: bool):
        super().__init__()
        hid = cin * t
        self.expand = ConvBNAct(cin, hid, 1, act=act if "e" in place else None) if t != 1 else None
        self.dw = ConvBNAct(hid, hid, k, stride, groups=hid, act=act if "d" in place else None)
        self.project = ConvBNAct(hid, cout, 1, act=act if "p" in place else None)
        self.shortcut = shortcut

    @classmethod
    def from_spec(cls, spec: Any) -> InvertedResidual:
        g = spec.gene
        return cls(spec.cin, spec.cout, g.k, spec.stride, g.t, g.act, g.place, spec.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.shortcut else y


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: k x k depthwise + BN (+ act), 1x1 pointwise + BN (+ act)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, act: str, place: str,
                 shortcut: bool):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, k, stride, groups=cin, act=act if "d" in place else None)
        self.pw = ConvBNAct(cin, cout, 1, act=act if "p" in place else None)
        self.shortcut = shortcut

    @classmethod
    def from_spec(cls, spec: Any) -> DepthwiseSeparable:
        g = spec.gene
        return cls(spec.cin, spec.cout, g.k, spec.stride, g.act, g.place, spec.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.shortcut else y


class XceptionBlock(nn.Module):
    """`m` separable convs, a 3x3/stride-2 max-pool when downsampling, and a shortcut.

    The shortcut is the identity when shapes match, otherwise a strided 1x1 conv + BN.
    `place` holds i/m/o: activation before each separable conv, between its halves,
    after its BN. `lead` False drops the pre-activation of the first conv.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, m: int, order: str, grow: str,
                 act: str, place: str, shortcut: bool, lead: bool = True):
        super().__init__()
        # Registered before the convs so that parameters come in the reference's order.
        if shortcut and (stride != 1 or cin != cout):
            self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(cout)
        else:
            self.skip = self.skip_bn = None
        units = []
        for j, (ci, co) in enumerate(xc_channels(m, grow, cin, cout)):
            pre = "i" in place and (lead or j > 0)
            units.append(SeparableConv(ci, co, k, act, order, pre=pre, mid="m" in place,
                                       post="o" in place))
        self.convs = nn.Sequential(*units)
        self.pool = nn.MaxPool2d(3, stride, 1) if stride != 1 else None
        self.shortcut = shortcut

    @classmethod
    def from_spec(cls, spec: Any) -> XceptionBlock:
        g = spec.gene
        lead = g.lead_act or spec.repeat > 0
        return cls(spec.cin, spec.cout, g.k, spec.stride, g.m, g.order, g.grow, g.act, g.place,
                   spec.shortcut, lead)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.pool is not None:
            y = self.pool(y)
        if not self.shortcut:
            return y
        if self.skip is not None:
            return y + self.skip_bn(self.skip(x))
        return y + x


class Network(nn.Module):
    """stem -> stages -> head -> global average pool -> dropout -> linear classifier."""

    def __init__(self, stem: list[nn.Module], stages: list[list[nn.Module]],
                 head: list[nn.Module], features: int, num_classes: int, dropout: float):
        super().__init__()
        self.stem = nn.Sequential(*stem)
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.head = nn.Sequential(*head)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0.0, 0.01)
                nn.init.zeros_(mod.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))
