"""Registry of block types: the one place that knows what each block type is.

An entry holds everything the rest of the code asks of a block type: which genes it
uses, its activation-placement vocabulary, when an identity shortcut is possible, its
output size, its exact analytic cost and the torch module that implements it. The
module is named by import path so that costing never imports torch.

Adding a block type is one new `BlockType` entry plus its module in `nas/model/blocks.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.arch import kernels as K

__all__ = ["BlockType", "block_out_size", "xc_channels"]

# (params, macs, output size) of one block instance.
BlockCost = tuple[int, int, int]


@dataclass(frozen=True)
class BlockType:
    """Static description of one block type."""

    name: str
    title: str
    # Activation positions, in canonical order: letter -> meaning.
    placements: dict[str, str]
    # Placement of the paper's reference network.
    reference_placement: str
    # Genes beyond the shared ones (c, n, s, k, act, place, residual) this type uses.
    extra_genes: tuple[str, ...]
    # Identity shortcut needs stride 1 and cin == cout (ir, ds); a projection
    # shortcut makes any shape possible (xc).
    projection_shortcut: bool
    cost: Callable[[Any, int, int, int, int, bool], BlockCost]
    # The kernels one block instance (a `nas.arch.genotype.BlockSpec`) runs, for the latency table.
    kernels: Callable[[Any], list[tuple]]
    module: str
    # Genes whose choices cannot share weights in a supernet: each choice gets its own
    # (Xception's dw/pw order runs the depthwise conv on other channels and another input).
    unshared_genes: tuple[str, ...] = ()

    def residual_possible(self, n: int, s: int, cin: int, cout: int) -> bool:
        """Whether a stage of `n` repeats can have a shortcut on at least one repeat."""
        if self.projection_shortcut:
            return True
        return n > 1 or (s == 1 and cin == cout)

    def shortcut_on_repeat(self, residual: bool, stride: int, cin: int, cout: int) -> bool:
        """Whether one repeat of a stage with `residual` on gets a shortcut."""
        if not residual:
            return False
        return self.projection_shortcut or (stride == 1 and cin == cout)


def block_out_size(h: int, s: int) -> int:
    """Output size of every block type for input size `h` and stride `s`: odd kernels with
    padding k // 2 (and a 3x3 max-pool with padding 1) keep ceil(h / s)."""
    return (h - 1) // s + 1


def _ir_cost(stage: Any, cin: int, cout: int, h: int, s: int, shortcut: bool) -> BlockCost:
    k2 = stage.k * stage.k
    hid = cin * stage.t
    ho = block_out_size(h, s)
    params = hid * k2 + 2 * hid + hid * cout + 2 * cout
    macs = (hid * k2 + hid * cout) * ho * ho
    if stage.t != 1:
        params += cin * hid + 2 * hid
        macs += cin * hid * h * h
    return params, macs, ho


def _ir_kernels(spec: Any) -> list[tuple]:
    g, h, place = spec.gene, spec.h_in, spec.gene.place
    hid = spec.cin * g.t
    out = []
    if g.t != 1:
        out.append(K.conv(spec.cin, hid, 1, 1, h, act=g.act if "e" in place else ""))
    out.append(K.conv(hid, hid, g.k, spec.stride, h, groups=hid, act=g.act if "d" in place else ""))
    ho = block_out_size(h, spec.stride)
    out.append(K.conv(hid, spec.cout, 1, 1, ho, act=g.act if "p" in place else ""))
    if spec.shortcut:
        out.append(K.add(spec.cout, ho))
    return out


def _ds_cost(stage: Any, cin: int, cout: int, h: int, s: int, shortcut: bool) -> BlockCost:
    k2 = stage.k * stage.k
    ho = block_out_size(h, s)
    params = cin * k2 + 2 * cin + cin * cout + 2 * cout
    macs = (cin * k2 + cin * cout) * ho * ho
    return params, macs, ho


def _ds_kernels(spec: Any) -> list[tuple]:
    g, h, cin = spec.gene, spec.h_in, spec.cin
    ho = block_out_size(h, spec.stride)
    out = [K.conv(cin, cin, g.k, spec.stride, h, groups=cin, act=g.act if "d" in g.place else ""),
           K.conv(cin, spec.cout, 1, 1, ho, act=g.act if "p" in g.place else "")]
    if spec.shortcut:
        out.append(K.add(spec.cout, ho))
    return out


def xc_channels(m: int, grow: str, cin: int, cout: int) -> list[tuple[int, int]]:
    """(in, out) channels of the `m` separable convs of one Xception block."""
    if grow == "first":
        return [(cin, cout)] + [(cout, cout)] * (m - 1)
    return [(cin, cin)] * (m - 1) + [(cin, cout)]


def _xc_cost(stage: Any, cin: int, cout: int, h: int, s: int, shortcut: bool) -> BlockCost:
    k2 = stage.k * stage.k
    params = macs = 0
    dw_first = stage.order == "dp"
    for ci, co in xc_channels(stage.m, stage.grow, cin, cout):
        dw = ci if dw_first else co
        p = dw * k2 + ci * co + 2 * co
        params += p
        macs += (p - 2 * co) * h * h
    ho = block_out_size(h, s)
    if shortcut and (s != 1 or cin != cout):
        params += cin * cout + 2 * cout
        macs += cin * cout * ho * ho
    return params, macs, ho


def _xc_kernels(spec: Any) -> list[tuple]:
    g, h, s = spec.gene, spec.h_in, spec.stride
    lead = g.lead_act or spec.repeat > 0
    mid = g.act if "m" in g.place else ""
    post = g.act if "o" in g.place else ""
    out = []
    for j, (ci, co) in enumerate(xc_channels(g.m, g.grow, spec.cin, spec.cout)):
        if "i" in g.place and (lead or j > 0):
            out.append(K.act(g.act, ci, h))
        if g.order == "dp":  # no BN between the halves; the mid activation follows the first
            out += [K.conv(ci, ci, g.k, 1, h, groups=ci, bn=False, act=mid),
                    K.conv(ci, co, 1, 1, h, act=post)]
        else:
            out += [K.conv(ci, co, 1, 1, h, bn=False, act=mid),
                    K.conv(co, co, g.k, 1, h, groups=co, act=post)]
    if s != 1:
        out.append(K.maxpool(spec.cout, h, s))
    if spec.shortcut:
        if s != 1 or spec.cin != spec.cout:
            out.append(K.conv(spec.cin, spec.cout, 1, s, h, padding=0))
        out.append(K.add(spec.cout, block_out_size(h, s)))
    return out


BLOCK_TYPES: dict[str, BlockType] = {
    "ir": BlockType(
        name="ir",
        title="MobileNetV2 inverted residual",
        placements={"e": "after the 1x1 expansion", "d": "after the depthwise conv",
                    "p": "after the 1x1 projection"},
        reference_placement="ed",
        extra_genes=("t",),
        projection_shortcut=False,
        cost=_ir_cost,
        kernels=_ir_kernels,
        module="nas.model.blocks:InvertedResidual",
    ),
    "xc": BlockType(
        name="xc",
        title="Xception separable block",
        placements={"i": "before each separable conv (pre)",
                    "m": "between its depthwise and pointwise halves (mid)",
                    "o": "after its batch norm (post)"},
        reference_placement="i",
        extra_genes=("m", "order", "grow", "lead_act"),
        projection_shortcut=True,
        cost=_xc_cost,
        kernels=_xc_kernels,
        module="nas.model.blocks:XceptionBlock",
        unshared_genes=("order",),
    ),
    "ds": BlockType(
        name="ds",
        title="MobileNetV1 depthwise separable",
        placements={"d": "after the depthwise conv", "p": "after the pointwise conv"},
        reference_placement="dp",
        extra_genes=(),
        projection_shortcut=False,
        cost=_ds_cost,
        kernels=_ds_kernels,
        module="nas.model.blocks:DepthwiseSeparable",
    ),
}
