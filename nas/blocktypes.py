"""Registry of block types: the one place that knows what each block type is.

An entry holds everything the rest of the code asks of a block type: which genes it
uses, its activation-placement vocabulary, when an identity shortcut is possible, its
output size, its exact analytic cost and the torch module that implements it. The
module is named by import path so that costing never imports torch.

Adding a block type is one new `BlockType` entry plus its module in `nas/blocks.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    module: str

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


def _same_out(h: int, s: int) -> int:
    # An odd kernel k with padding k // 2 (or a 3x3 max-pool with padding 1).
    return (h - 1) // s + 1


def _ir_cost(stage: Any, cin: int, cout: int, h: int, s: int, shortcut: bool) -> BlockCost:
    k2 = stage.k * stage.k
    hid = cin * stage.t
    ho = _same_out(h, s)
    params = hid * k2 + 2 * hid + hid * cout + 2 * cout
    macs = (hid * k2 + hid * cout) * ho * ho
    if stage.t != 1:
        params += cin * hid + 2 * hid
        macs += cin * hid * h * h
    return params, macs, ho


def _ds_cost(stage: Any, cin: int, cout: int, h: int, s: int, shortcut: bool) -> BlockCost:
    k2 = stage.k * stage.k
    ho = _same_out(h, s)
    params = cin * k2 + 2 * cin + cin * cout + 2 * cout
    macs = (cin * k2 + cin * cout) * ho * ho
    return params, macs, ho


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
    ho = _same_out(h, s)
    if shortcut and (s != 1 or cin != cout):
        params += cin * cout + 2 * cout
        macs += cin * cout * ho * ho
    return params, macs, ho


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
        module="nas.blocks:InvertedResidual",
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
        module="nas.blocks:XceptionBlock",
    ),
    "ds": BlockType(
        name="ds",
        title="MobileNetV1 depthwise separable",
        placements={"d": "after the depthwise conv", "p": "after the pointwise conv"},
        reference_placement="dp",
        extra_genes=(),
        projection_shortcut=False,
        cost=_ds_cost,
        module="nas.blocks:DepthwiseSeparable",
    ),
}
