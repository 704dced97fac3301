"""Exact analytic cost of a genotype: parameters and multiply-accumulates, no torch.

MACs count Conv2d and Linear layers only, for one image at the genotype's resolution
(the MobileNet papers' "MAdds"); batch norm, activations, pooling and additions are
free. This equals `torch.utils.flop_counter.FlopCounterMode` total / 2 on the built
model, and `params` equals the sum of `numel()` over its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.arch.genotype import Genotype

__all__ = ["Cost", "PartCost", "cost"]


@dataclass(frozen=True)
class PartCost:
    """Cost of one named part of the network (stem, a stage, head, classifier)."""

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
    parts: list[PartCost] = []
    h = genotype.resolution
    cin = in_channels
    p_stem = m_stem = 0
    for layer, c in zip(genotype.stem, genotype.stem_channels(), strict=True):
        h = layer.out_size(h)
        w = cin * c * layer.k * layer.k
        p_stem += w + 2 * c
        m_stem += w * h * h
        cin = c
    if breakdown:
        parts.append(PartCost("stem", p_stem, m_stem, cin, h))
    total_p, total_m = p_stem, m_stem
    stage_p = stage_m = 0
    last_stage = 0
    for spec in genotype.blocks():
        if breakdown and spec.stage != last_stage:
            parts.append(_stage_part(genotype, last_stage, stage_p, stage_m, cin, h))
            stage_p = stage_m = 0
            last_stage = spec.stage
        p, m, h = spec.gene.type.cost(spec.gene, spec.cin, spec.cout, spec.h_in, spec.stride,
                                      spec.shortcut)
        stage_p += p
        stage_m += m
        total_p += p
        total_m += m
        cin = spec.cout
    if breakdown:
        parts.append(_stage_part(genotype, last_stage, stage_p, stage_m, cin, h))
    p_head = m_head = 0
    for layer, c in zip(genotype.head, genotype.head_channels(), strict=True):
        k2 = layer.k * layer.k
        w = cin * c * k2 if layer.kind == "conv" else cin * k2 + cin * c
        p_head += w + 2 * c
        m_head += w * h * h
        cin = c
    p_fc = cin * num_classes + num_classes
    m_fc = cin * num_classes
    if breakdown:
        if genotype.head:
            parts.append(PartCost("head", p_head, m_head, cin, h))
        parts.append(PartCost("classifier", p_fc, m_fc, num_classes, 1))
    return Cost(total_p + p_head + p_fc, total_m + m_head + m_fc, tuple(parts))


def _stage_part(genotype: Genotype, i: int, p: int, m: int, c: int, h: int) -> PartCost:
    st = genotype.stages[i]
    return PartCost(f"stage {i} {st.block} x{st.n}", p, m, c, h)


# ----- command line: python -m nas.cost +space=mnv2 | +genotype=<string or yaml> ----------
