"""Exact analytic cost of a genotype: parameters and multiply-accumulates, no torch.

MACs count Conv2d and Linear layers only, for one image at the genotype's resolution
(the MobileNet papers' "MAdds"); batch norm, activations, pooling and additions are
free. This equals `torch.utils.flop_counter.FlopCounterMode` total / 2 on the built
model, and `params` equals the sum of `numel()` over its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from nas.arch.genotype import (
    Genotype,
    HeadLayer,
    Stage,
    StemLayer,
    head_channels,
    stage_blocks,
    stem_channels,
)

__all__ = ["Cost", "PartCost", "classifier_cost", "cost", "head_cost", "stage_cost", "stem_cost"]


class PartCost(NamedTuple):
    """Cost of one named part of the network (stem, a stage, head, classifier), and the
    channels and size it hands to the next part. (A named tuple: `cost` makes several per
    genotype, and the search costs every proposal.)"""

    name: str
    params: int
    macs: int
    out_channels: int
    out_size: int


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    parts: tuple[PartCost, ...] = ()

    @property
    def mflops(self) -> float:
        """Millions of multiply-accumulates (the budget unit)."""
        return self.macs / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def cost(genotype: Genotype, num_classes: int = 1000, in_channels: int = 3,
         breakdown: bool = False) -> Cost:
    """Params and MACs of `genotype` built with `num_classes` outputs and `in_channels` inputs.

    With `breakdown`, `Cost.parts` holds the stem, every stage, the head and the classifier.
    """
    g = genotype
    parts = [stem_cost(g.stem, g.width, g.resolution, in_channels)]
    for i, st in enumerate(g.stages):
        parts.append(stage_cost(i, st, parts[-1].out_channels, parts[-1].out_size, g.width))
    if g.head:
        parts.append(head_cost(g.head, g.width, parts[-1].out_channels, parts[-1].out_size))
    parts.append(classifier_cost(parts[-1].out_channels, num_classes))
    return Cost(sum(p.params for p in parts), sum(p.macs for p in parts),
                tuple(parts) if breakdown else ())


# ----- the parts: one function each, shared by `cost` and `SearchSpace.cost_range` ----------
def stem_cost(stem: tuple[StemLayer, ...], width: float, resolution: int, in_channels: int) -> PartCost:
    """The stem's convolutions (+ BN) on an image of `resolution` pixels."""
    h, cin, params, macs = resolution, in_channels, 0, 0
    for layer, c in zip(stem, stem_channels(stem, width), strict=True):
        h = layer.out_size(h)
        w = cin * c * layer.k * layer.k
        params += w + 2 * c
        macs += w * h * h
        cin = c
    return PartCost("stem", params, macs, cin, h)


def stage_cost(i: int, stage: Stage, cin: int, h: int, width: float) -> PartCost:
    """Stage `i` entered with `cin` channels at size `h`."""
    params = macs = 0
    block_cost = stage.type.cost
    for spec in stage_blocks(i, stage, cin, h, width):
        p, m, h = block_cost(stage, spec.cin, spec.cout, spec.h_in, spec.stride, spec.shortcut)
        params += p
        macs += m
    return PartCost(f"stage {i} {stage.block} x{stage.n}", params, macs, spec.cout, h)


def head_cost(head: tuple[HeadLayer, ...], width: float, cin: int, h: int) -> PartCost:
    """The head's layers (+ BN) entered with `cin` channels at size `h`; a separable layer is a
    depthwise k x k without BN, then a pointwise conv."""
    params = macs = 0
    for layer, c in zip(head, head_channels(head, width), strict=True):
        k2 = layer.k * layer.k
        w = cin * c * k2 if layer.kind == "conv" else cin * k2 + cin * c
        params += w + 2 * c
        macs += w * h * h
        cin = c
    return PartCost("head", params, macs, cin, h)


def classifier_cost(cin: int, num_classes: int) -> PartCost:
    """The linear classifier after global pooling (pooling and dropout are free)."""
    return PartCost("classifier", cin * num_classes + num_classes, cin * num_classes, num_classes, 1)

