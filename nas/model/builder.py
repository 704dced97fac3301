"""Genotype -> plain `torch.nn.Module`. Imports torch only (plus the pure-Python genotype)."""

from __future__ import annotations

import importlib
from functools import cache

from torch import nn

from nas.arch.blocktypes import BLOCK_TYPES
from nas.arch.genotype import Genotype, load_genotype
from nas.model.blocks import ConvBNAct, Network, SeparableConv

__all__ = ["build_model"]


@cache
def _block_module(block: str) -> type[nn.Module]:
    module_name, _, cls_name = BLOCK_TYPES[block].module.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build_model(genotype: Genotype | str, num_classes: int = 1000,
                in_channels: int = 3) -> Network:
    """Build the network a genotype describes (a genotype string or YAML path also works)."""
    if isinstance(genotype, str):
        genotype = load_genotype(genotype)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid: expected an integer >= 1")
    stem = []
    cin = in_channels
    for layer, c in zip(genotype.stem, genotype.stem_channels(), strict=True):
        stem.append(ConvBNAct(cin, c, layer.k, layer.s, layer.p, act=layer.act))
        cin = c
    stages: list[list[nn.Module]] = [[] for _ in genotype.stages]
    for spec in genotype.blocks():
        stages[spec.stage].append(_block_module(spec.gene.block).from_spec(spec))
        cin = spec.cout
    head: list[nn.Module] = []
    for layer, c in zip(genotype.head, genotype.head_channels(), strict=True):
        if layer.kind == "conv":
            head.append(ConvBNAct(cin, c, layer.k, act=layer.act))
        else:
            head.append(SeparableConv(cin, c, layer.k, layer.act, post=True))
        cin = c
    model = Network(stem, stages, head, cin, num_classes, genotype.dropout)
    model.genotype = str(genotype)  # kept for export; a plain attribute, not state
    return model
