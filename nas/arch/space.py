"""Search spaces: for every gene, a fixed value or a list of choices.

`SearchSpace.decode(choose)` is the one function that turns choices into a
`Genotype`; `choose(name, options)` is backed by an Optuna trial in the search and by
a seeded RNG in `sample`. Nothing else in the code base needs to know how choices
are made.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from nas.arch.blocktypes import BLOCK_TYPES
from nas.arch.genotype import (
    DIVISOR,
    Genotype,
    HeadLayer,
    Stage,
    StemLayer,
    scale_channels,
)

__all__ = ["SearchSpace", "StageChoices", "repeat_choices", "scaled_choices"]

Chooser = Callable[[str, Sequence[Any]], Any]

# Genes of a stage, in the order they are chosen.
_STAGE_GENES = ("block", "c", "n", "s", "k", "t", "act", "place", "residual",
                "m", "order", "grow", "lead_act")
_XC_GENES = ("m", "order", "grow", "lead_act")


def _genes_of(block: str) -> tuple[str, ...]:
    """The genes a stage of this block type uses (the others stay at their defaults)."""
    extra = BLOCK_TYPES[block].extra_genes
    return tuple(g for g in _STAGE_GENES
                 if g not in ("t", *_XC_GENES) or g in extra)


def scaled_choices(c: int, scales: Sequence[float] = (0.75, 1.0, 1.25)) -> tuple[int, ...]:
    """Channel choices around a reference count: each scale, to the nearest multiple of 8.

    (MobileNet's rounding would map 0.75 x 24 back to 24, so plain nearest rounding keeps
    the choices distinct.)
    """
    return tuple(sorted({c if s == 1.0 else max(DIVISOR, int(c * s / DIVISOR + 0.5) * DIVISOR)
                         for s in scales}))


def repeat_choices(n: int, spread: int = 1) -> tuple[int, ...]:
    """Repeat counts within `spread` of a reference count, never below 1."""
    return tuple(range(max(1, n - spread), n + spread + 1))


@dataclass(frozen=True)
class StageChoices:
    """Choices for every gene of one stage; a one-element tuple is a fixed gene."""

    block: tuple[str, ...]
    c: tuple[int, ...]
    n: tuple[int, ...] = (1,)
    s: tuple[int, ...] = (1,)
    k: tuple[int, ...] = (3,)
    t: tuple[int, ...] = (1,)
    act: tuple[str, ...] = ("relu",)
    place: tuple[str, ...] = ("",)
    residual: tuple[bool, ...] = (False,)
    m: tuple[int, ...] = (1,)
    order: tuple[str, ...] = ("dp",)
    grow: tuple[str, ...] = ("first",)
    lead_act: tuple[bool, ...] = (True,)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"stage choices {f.name}: expected a non-empty tuple, "
                                 f"got {value!r}")


@dataclass(frozen=True)
class SearchSpace:
    """A family of genotypes around a reference network."""

    name: str
    description: str
    reference: Genotype
    stages: tuple[StageChoices, ...]
    stem: tuple[tuple[StemLayer, ...], ...]
    head: tuple[tuple[HeadLayer, ...], ...]
    width: tuple[float, ...] = (1.0,)
    resolution: tuple[int, ...] = (224,)
    dropout: tuple[float, ...] = (0.0,)
    _labels: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("stem", "head"):
            labels = {_label(option): option for option in getattr(self, name)}
            self._labels[name] = labels

    # ----- decoding -----------------------------------------------------------------
    def decode(self, choose: Chooser) -> Genotype:
        """The genotype picked by `choose(name, options)` for every non-fixed gene.

        A shortcut drawn for a stage whose shapes cannot have one is turned off, so
        every decoded genotype is valid.
        """

        def pick(name: str, options: Sequence[Any]) -> Any:
            return options[0] if len(options) == 1 else choose(name, list(options))

        width = pick("width", self.width)
        resolution = pick("resolution", self.resolution)
        dropout = pick("dropout", self.dropout)
        stem = self._labels["stem"][pick("stem", list(self._labels["stem"]))]
        cin = scale_channels(stem[-1].c, width)
        stages = []
        for i, sc in enumerate(self.stages):
            genes: dict[str, Any] = {"block": pick(f"s{i}_block", sc.block)}
            for gene in _genes_of(genes["block"])[1:]:
                genes[gene] = pick(f"s{i}_{gene}", getattr(sc, gene))
            stage = _coerced_stage(genes, cin, width)
            stages.append(stage)
            cin = scale_channels(stage.c, width)
        head = self._labels["head"][pick("head", list(self._labels["head"]))]
        return Genotype(stages=tuple(stages), stem=stem, head=head, width=width,
                        resolution=resolution, dropout=dropout)

    def sample(self, seed: int | random.Random) -> Genotype:
        """A genotype drawn uniformly gene by gene, reproducibly from `seed`."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return self.decode(lambda _name, options: rng.choice(options))

    def contains(self, genotype: Genotype) -> bool:
        """Whether `genotype` is one of the space's genotypes."""
        if (genotype.width not in self.width or genotype.resolution not in self.resolution
                or genotype.dropout not in self.dropout or genotype.stem not in self.stem
                or genotype.head not in self.head or len(genotype.stages) != len(self.stages)):
            return False
        cin = scale_channels(genotype.stem[-1].c, genotype.width)
        for i, st in enumerate(genotype.stages):
            if st not in self._stage_options(i, cin, genotype.width):
                return False
            cin = scale_channels(st.c, genotype.width)
        return True

    # ----- enumeration ----------------------------------------------------------------
    def _stage_options(self, i: int, cin: int, width: float) -> set[Stage]:
        """Distinct stages position `i` can hold after a stage ending in `cin` channels."""
        sc = self.stages[i]
        out: set[Stage] = set()
        for block in sc.block:
            names = _genes_of(block)[1:]
            for combo in itertools.product(*(getattr(sc, g) for g in names)):
                genes = {"block": block, **dict(zip(names, combo, strict=True))}
                out.add(_coerced_stage(genes, cin, width))
        return out

    def size(self) -> int:
        """Exact number of distinct genotypes in the space."""
        total = 0
        outer = len(self.resolution) * len(self.dropout) * len(self.head)
        for width in self.width:
            counts: dict[int, int] = {}
            for stem in self.stem:
                c0 = scale_channels(stem[-1].c, width)
                counts[c0] = counts.get(c0, 0) + 1
            for i in range(len(self.stages)):
                nxt: dict[int, int] = {}
                for cin, count in counts.items():
                    for stage in self._stage_options(i, cin, width):
                        cout = scale_channels(stage.c, width)
                        nxt[cout] = nxt.get(cout, 0) + count
                counts = nxt
            total += sum(counts.values()) * outer
        return total

    def cost_range(self, num_classes: int = 1000, in_channels: int = 3) -> dict[str, tuple[int, int]]:
        """Exact smallest and largest MACs and params over the whole space.

        Found by dynamic programming over stages (the state is channels and feature-map
        size), so it costs milliseconds to seconds rather than an enumeration.
        """
        best = {"macs": [None, None], "params": [None, None]}
        for width in self.width:
            # state (cin, h) -> [min macs, max macs, min params, max params]
            states: dict[tuple[int, int], list[int]] = {}
            for stem in self.stem:
                for res in self.resolution:
                    h, cin, p, m = res, in_channels, 0, 0
                    for layer, c in zip(stem, [scale_channels(x.c, width) for x in stem],
                                        strict=True):
                        h = layer.out_size(h)
                        p += cin * c * layer.k * layer.k + 2 * c
                        m += cin * c * layer.k * layer.k * h * h
                        cin = c
                    _merge(states, (cin, h), [m, m, p, p])
            for i in range(len(self.stages)):
                nxt: dict[tuple[int, int], list[int]] = {}
                options_by_cin: dict[int, set[Stage]] = {}
                for (cin, h), acc in states.items():
                    if cin not in options_by_cin:
                        options_by_cin[cin] = self._stage_options(i, cin, width)
                    seen: dict[tuple, tuple[int, int, int]] = {}
                    for stage in options_by_cin[cin]:
                        key = _cost_key(stage)
                        if key not in seen:
                            seen[key] = _stage_cost(stage, cin, h, width)
                        p, m, ho = seen[key]
                        cout = scale_channels(stage.c, width)
                        _merge(nxt, (cout, ho), [acc[0] + m, acc[1] + m, acc[2] + p, acc[3] + p])
                states = nxt
            for head in self.head:
                probe = Genotype(stages=self.reference.stages, stem=self.reference.stem,
                                 head=head, width=width, resolution=self.reference.resolution)
                channels = probe.head_channels()
                for (cin, h), acc in states.items():
                    p = m = 0
                    c_in = cin
                    for layer, c in zip(head, channels, strict=True):
                        k2 = layer.k * layer.k
                        w = c_in * c * k2 if layer.kind == "conv" else c_in * k2 + c_in * c
                        p += w + 2 * c
                        m += w * h * h
                        c_in = c
                    p += c_in * num_classes + num_classes
                    m += c_in * num_classes
                    for key, lo, hi, extra in (("macs", acc[0], acc[1], m),
                                               ("params", acc[2], acc[3], p)):
                        cur = best[key]
                        cur[0] = lo + extra if cur[0] is None else min(cur[0], lo + extra)
                        cur[1] = hi + extra if cur[1] is None else max(cur[1], hi + extra)
        return {k: (v[0], v[1]) for k, v in best.items()}


def _label(option: tuple) -> str:
    return ":".join(map(str, option)) if option else "none"


def _merge(states: dict, key: tuple[int, int], vals: list[int]) -> None:
    cur = states.get(key)
    if cur is None:
        states[key] = vals
    else:
        cur[0] = min(cur[0], vals[0])
        cur[1] = max(cur[1], vals[1])
        cur[2] = min(cur[2], vals[2])
        cur[3] = max(cur[3], vals[3])


def _cost_key(stage: Stage) -> tuple:
    # Activation function and placement do not change params or MACs.
    return (stage.block, stage.c, stage.n, stage.s, stage.k, stage.t, stage.residual,
            stage.m, stage.order, stage.grow)


def _stage_cost(stage: Stage, cin: int, h: int, width: float) -> tuple[int, int, int]:
    bt = stage.type
    cout = scale_channels(stage.c, width)
    params = macs = 0
    for r in range(stage.n):
        stride = stage.s if r == 0 else 1
        shortcut = bt.shortcut_on_repeat(stage.residual, stride, cin, cout)
        p, m, h = bt.cost(stage, cin, cout, h, stride, shortcut)
        params += p
        macs += m
        cin = cout
    return params, macs, h


def _coerced_stage(genes: dict[str, Any], cin: int, width: float) -> Stage:
    bt = BLOCK_TYPES[genes["block"]]
    cout = scale_channels(genes["c"], width)
    if genes.get("residual") and not bt.residual_possible(genes.get("n", 1), genes.get("s", 1),
                                                          cin, cout):
        genes = {**genes, "residual": False}
    return Stage(**genes)
