"""Genotype -> plain `torch.nn.Module`. Imports torch only (plus the pure-Python genotype).

`build_model` assembles a `Network` from its parts; `stem_layers`, `block_module` and
`head_layers` build one part each, so that the supernet can walk the same parts (and get
the same parameter names) for every choice of a space.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from torch import nn

from nas.arch.blocktypes import BLOCK_TYPES
from nas.arch.genotype import Genotype, HeadLayer, StemLayer, head_channels, load_genotype, stem_channels
from nas.model.blocks import ConvBNAct, Network, SeparableConv

__all__ = ["block_module", "build_model", "head_layers", "stem_layers"]


@cache
def _block_class(block: str) -> type[nn.Module]:
    module_name, _, cls_name = BLOCK_TYPES[block].module.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def block_module(spec: Any) -> nn.Module:
    """The module of one block instance (a `nas.arch.genotype.BlockSpec`)."""
    return _block_class(spec.gene.block).from_spec(spec)


def stem_layers(stem: tuple[StemLayer, ...], width: float, in_channels: int) -> list[nn.Module]:
    layers, cin = [], in_channels
    for layer, c in zip(stem, stem_channels(stem, width), strict=True):
        layers.append(ConvBNAct(cin, c, layer.k, layer.s, layer.p, act=layer.act))
        cin = c
    return layers


def head_layers(head: tuple[HeadLayer, ...], width: float, cin: int) -> list[nn.Module]:
    layers = []
    for layer, c in zip(head, head_channels(head, width), strict=True):
        if layer.kind == "conv":
            layers.append(ConvBNAct(cin, c, layer.k, act=layer.act))
        else:
            layers.append(SeparableConv(cin, c, layer.k, layer.act, post=True))
        cin = c
    return layers


def build_model(genotype: Genotype | str, num_classes: int = 1000,
                in_channels: int = 3) -> Network:
    """Build the network a genotype describes (a genotype string or YAML path also works)."""
    if isinstance(genotype, str):
        genotype = load_genotype(genotype)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid: expected an integer >= 1")
    stem = stem_layers(genotype.stem, genotype.width, in_channels)
    cin = genotype.stem_channels()[-1]
    stages: list[list[nn.Module]] = [[] for _ in genotype.stages]
    for spec in genotype.blocks():
        stages[spec.stage].append(block_module(spec))
        cin = spec.cout
    head = head_layers(genotype.head, genotype.width, cin)
    features = genotype.head_channels()[-1] if genotype.head else cin
    model = Network(stem, stages, head, features, num_classes, genotype.dropout)
    model.genotype = str(genotype)  # kept for export; a plain attribute, not state
    return model
