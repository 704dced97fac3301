"""Registry of block types: the one place that knows what each block type is.

An entry holds everything the rest of the code asks of a block type: its genes beyond the
shared ones (default, check, token), the order of its genes in the dict form and in the
string, its activation-placement vocabulary, its canonical spelling, when an identity
shortcut is possible, its output size, its exact analytic cost and the torch module that
implements it. The module is named by import path so that costing never imports torch.

Adding a block type is one `register(BlockType(...))` plus its module (the built-in ones
live in `nas/model/blocks.py`); `Stage`, the string codec and the search spaces ask the
registry for everything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from nas.arch import kernels as K
from nas.arch.genes import (
    MAX_EXPANSION,
    MAX_REPEATS,
    PADDING,
    PLACE,
    SHARED,
    SHARED_ORDER,
    SHARED_SPELLING,
    Gene,
    IntToken,
    WordToken,
    check_bool,
    in_range,
    one_of,
)

__all__ = [
    "BLOCK_TYPES",
    "EXPANSION",
    "GROWS",
    "ORDERS",
    "XC_GENES",
    "BlockType",
    "block_out_size",
    "extra_genes",
    "gene_owners",
    "on_registry_change",
    "place_words",
    "register",
    "spelling_order",
    "stage_genes",
    "unregister",
    "xc_channels",
]

# (params, macs, output size) of one block instance.
BlockCost = tuple[int, int, int]

def _unchanged(genes: dict[str, Any]) -> dict[str, Any]:
    return genes


@dataclass(frozen=True)
class BlockType:
    """Static description of one block type."""

    name: str
    title: str
    # Activation positions, in canonical order: letter -> meaning.
    placements: dict[str, str]
    # Placement of the paper's reference network.
    reference_placement: str
    # Identity shortcut needs stride 1 and cin == cout (ir, ds); a projection
    # shortcut makes any shape possible (xc).
    projection_shortcut: bool
    cost: Callable[[Any, int, int, int, int, bool], BlockCost]
    # The kernels one block instance (a `nas.arch.genotype.BlockSpec`) runs, for the latency table.
    kernels: Callable[[Any], list[tuple]]
    module: str
    # Genes beyond the shared ones (c, n, s, k, act, place, residual) this type uses.
    genes: tuple[Gene, ...] = ()
    # Every gene's name in the order of the dict form, which is also the order a search space
    # chooses them in; empty: the shared ones, then `genes`.
    gene_order: tuple[str, ...] = ()
    # Every gene's name in the order of its token in the canonical string; empty: the shared
    # ones, then `genes`.
    spelling: tuple[str, ...] = ()
    # Words accepted for placement letters, e.g. "dw" for "d".
    place_words: Mapping[str, str] = field(default_factory=dict)
    # The one spelling of a stage's validated genes: drops what has no effect (an activation
    # after an expansion that does not exist), so that two spellings never mean one network.
    canonical: Callable[[dict[str, Any]], dict[str, Any]] = _unchanged
    # Genes whose choices cannot share weights in a supernet: each choice gets its own
    # (Xception's dw/pw order runs the depthwise conv on other channels and another input).
    unshared_genes: tuple[str, ...] = ()
    # name -> Gene for the shared genes and this type's.
    by_name: Mapping[str, Gene] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        own = tuple(g.name for g in self.genes)
        if not self.gene_order:
            object.__setattr__(self, "gene_order", SHARED_ORDER + own)
        if not self.spelling:
            object.__setattr__(self, "spelling", SHARED_SPELLING + own)
        every = {g.name: g for g in (*SHARED, PLACE, *self.genes)}
        object.__setattr__(self, "by_name", MappingProxyType(every))
        _check_entry(self, own)

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


def _check_entry(bt: BlockType, own: tuple[str, ...]) -> None:
    """A mistake in an entry fails when it is written, not when a genotype first uses it."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", bt.name) or bt.name in ("stem", "head"):
        raise ValueError(f"block type {bt.name!r}: a name is lower-case letters and digits, "
                         "not stem or head")
    every = set(bt.by_name)
    if (len(own) != len(set(own)) or set(own) & {*SHARED_ORDER, "block", PADDING.name}
            or not all(name.isidentifier() and not name.startswith("_") for name in own)):
        raise ValueError(f"block type {bt.name}: genes {own} must be names (no leading _) that "
                         "repeat neither each other nor a shared gene")
    for what, names in (("gene_order", bt.gene_order), ("spelling", bt.spelling)):
        if len(names) != len(every) or set(names) != every:
            raise ValueError(f"block type {bt.name}: {what} {names} must hold each of "
                             f"{sorted(every)} once")
    if not set(bt.unshared_genes) <= every or not set(bt.reference_placement) <= set(bt.placements):
        raise ValueError(f"block type {bt.name}: unshared genes and the reference placement "
                         "must be its own genes and letters")


# ----- the registry ---------------------------------------------------------------------------
_REGISTRY: dict[str, BlockType] = {}
# Read-only: `register` and `unregister` keep the tables derived from it current.
BLOCK_TYPES: Mapping[str, BlockType] = MappingProxyType(_REGISTRY)


def register(bt: BlockType) -> BlockType:
    """Add a block type. A gene it shares a name with another type's must be that same gene, and
    no token of a new gene nor a placement word may read as another's."""
    if bt.name in _REGISTRY:
        raise ValueError(f"block type {bt.name!r} is already registered")
    _check_fits(bt)
    _REGISTRY[bt.name] = bt
    _forget()
    return bt


def _check_fits(bt: BlockType) -> None:
    known = extra_genes()
    seen = [*SHARED, PLACE, PADDING, *known.values()]
    for gene in bt.genes:
        if gene.name in known and known[gene.name] != gene:
            raise ValueError(f"block type {bt.name}: gene {gene.name!r} differs from the registered "
                             f"one of {', '.join(gene_owners(gene.name))}")
        if gene.name not in known:
            _check_token_distinct(bt.name, gene, seen)
            seen.append(gene)
    words = place_words()
    for word, letter in bt.place_words.items():
        if words.get(word, letter) != letter:
            raise ValueError(f"block type {bt.name}: placement word {word!r} already means "
                             f"{words[word]!r}")


def unregister(name: str) -> None:
    """Remove a registered block type (a plugin or a test that adds one for a while)."""
    del _REGISTRY[name]
    _forget()


def _check_token_distinct(block: str, gene: Gene, others: Iterable[Gene]) -> None:
    for other in others:
        if (any(other.token.matches(t) for t in gene.token.samples())
                or any(gene.token.matches(t) for t in other.token.samples())):
            raise ValueError(f"block type {block}: the token of gene {gene.name!r} reads as the "
                             f"token of {other.name!r}")


_LISTENERS: list[Callable[[], None]] = []


def on_registry_change(listener: Callable[[], None]) -> None:
    """Call `listener` after every `register` and `unregister`: for what other modules derive
    from the registry (each block type's Stage class)."""
    _LISTENERS.append(listener)


def _forget() -> None:
    for table in (stage_genes, spelling_order, extra_genes, place_words):
        table.cache_clear()
    for listener in _LISTENERS:
        listener()


def _union(orders: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for order in orders for name in order))


@cache
def stage_genes() -> tuple[str, ...]:
    """Every stage field: "block", then each registered type's genes in its dict order, first
    seen first (the order of `repr`, of a space's choices and of the valid fields)."""
    return ("block", *_union(bt.gene_order for bt in _REGISTRY.values()))


@cache
def spelling_order() -> tuple[str, ...]:
    """Every gene in the order of the registered types' spellings, first seen first."""
    return _union(bt.spelling for bt in _REGISTRY.values())


@cache
def extra_genes() -> Mapping[str, Gene]:
    """Every registered gene beyond the shared ones, by name, in `stage_genes` order."""
    genes = {g.name: g for bt in _REGISTRY.values() for g in bt.genes}
    return MappingProxyType({name: genes[name] for name in stage_genes() if name in genes})


@cache
def place_words() -> Mapping[str, str]:
    """Every placement word any registered type accepts -> its letter."""
    return MappingProxyType({w: letter for bt in _REGISTRY.values() for w, letter in bt.place_words.items()})


def gene_owners(name: str) -> tuple[str, ...]:
    """The registered block types that have gene `name` beyond the shared ones."""
    return tuple(bt.name for bt in _REGISTRY.values() if any(g.name == name for g in bt.genes))


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


# ----- the built-in block types ---------------------------------------------------------------
ORDERS = ("dp", "pd")  # xc: depthwise then pointwise (Xception), or the reverse
GROWS = ("first", "last")  # xc: which separable conv changes the channel count

EXPANSION = Gene(
    "t", 1, in_range(1, "expansion t", MAX_EXPANSION), IntToken("e", "expansion"),
    misplaced="{value!r} is not valid: expansion applies only to {owners} blocks, {block} blocks "
              "need t = {default!r}")
XC_GENES = (
    Gene("m", 1, in_range(1, "separable convs per block m", MAX_REPEATS), IntToken("m", "convs")),
    Gene("order", "dp", one_of(ORDERS, "order"), WordToken({o: o for o in ORDERS})),
    Gene("grow", "first", one_of(GROWS, "grow position"), WordToken({g: g for g in GROWS}, prefix="g")),
    Gene("lead_act", True, check_bool, WordToken({"lead": True, "nolead": False})),
)


def _ir_canonical(genes: dict[str, Any]) -> dict[str, Any]:
    # Without expansion there is no expansion layer to put an activation after.
    if genes["t"] == 1:
        return {**genes, "place": genes["place"].replace("e", "")}
    return genes


def _xc_canonical(genes: dict[str, Any]) -> dict[str, Any]:
    # lead_act only drops a pre-activation; without pre-activations it means nothing.
    if "i" not in genes["place"]:
        return {**genes, "lead_act": True}
    return genes


register(BlockType(
    name="ir",
    title="MobileNetV2 inverted residual",
    placements={"e": "after the 1x1 expansion", "d": "after the depthwise conv",
                "p": "after the 1x1 projection"},
    reference_placement="ed",
    projection_shortcut=False,
    cost=_ir_cost,
    kernels=_ir_kernels,
    module="nas.model.blocks:InvertedResidual",
    genes=(EXPANSION,),
    gene_order=("c", "n", "s", "k", "t", "act", "place", "residual"),
    spelling=("n", "k", "s", "t", "c", "place", "act", "residual"),
    place_words={"expand": "e", "dw": "d", "depthwise": "d", "project": "p", "pw": "p",
                 "pointwise": "p"},
    canonical=_ir_canonical,
))
register(BlockType(
    name="xc",
    title="Xception separable block",
    placements={"i": "before each separable conv (pre)",
                "m": "between its depthwise and pointwise halves (mid)",
                "o": "after its batch norm (post)"},
    reference_placement="i",
    projection_shortcut=True,
    cost=_xc_cost,
    kernels=_xc_kernels,
    module="nas.model.blocks:XceptionBlock",
    genes=XC_GENES,
    spelling=("n", "k", "s", "c", "m", "order", "grow", "place", "act", "residual", "lead_act"),
    place_words={"pre": "i", "mid": "m", "post": "o"},
    canonical=_xc_canonical,
    unshared_genes=("order",),
))
register(BlockType(
    name="ds",
    title="MobileNetV1 depthwise separable",
    placements={"d": "after the depthwise conv", "p": "after the pointwise conv"},
    reference_placement="dp",
    projection_shortcut=False,
    cost=_ds_cost,
    kernels=_ds_kernels,
    module="nas.model.blocks:DepthwiseSeparable",
    place_words={"dw": "d", "depthwise": "d", "pw": "p", "pointwise": "p"},
))
