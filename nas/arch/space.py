"""Search spaces: for every gene, a fixed value or a list of choices.

`SearchSpace.decode(choose)` is the one function that turns choices into a
`Genotype`; `choose(name, options)` is backed by an Optuna trial in the search and by
a seeded RNG in `sample`. Nothing else in the code base needs to know how choices
are made.
"""

from __future__ import annotations

import itertools
import operator
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any, TypeVar

from nas.arch.blocktypes import BLOCK_TYPES, block_out_size, extra_genes, stage_genes
from nas.arch.cost import PartCost, classifier_cost, cost, head_cost, stage_cost, stem_cost
from nas.arch.genes import SHARED
from nas.arch.genotype import (
    DIVISOR,
    Genotype,
    HeadLayer,
    Stage,
    StemLayer,
    scale_channels,
    stem_out_size,
)

__all__ = ["GLOBAL_GENES", "SearchSpace", "StageChoices", "repeat_choices", "scaled_choices"]

# The genes a genotype has once (the others, `stage_genes()`, once per stage).
GLOBAL_GENES = ("width", "resolution", "dropout", "stem", "head")

Chooser = Callable[[str, Sequence[Any]], Any]
V = TypeVar("V")


def _genes_of(block: str) -> tuple[str, ...]:
    """The genes a stage of this block type uses, in the order they are chosen (the others stay
    at their defaults)."""
    return ("block", *BLOCK_TYPES[block].gene_order)


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


class StageChoices:
    """Choices for every gene of one stage; a one-element tuple is a fixed gene.

    `block` and `c` are required; every other gene of every registered block type is a field
    (`stage_genes()` order) whose default is its one default value (placement: none). A stage
    offering several block types chooses each type's genes only for that type.
    """

    block: tuple[str, ...]
    c: tuple[int, ...]

    def __new__(cls, *args: Any, **choices: Any) -> StageChoices:
        made = object.__new__(_choices_class(stage_genes()))
        if not isinstance(made, cls):  # made before a block type with new genes was registered
            made.__init__(*args, **choices)
        return made

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"stage choices {f.name}: expected a non-empty tuple, "
                                 f"got {value!r}")


_CHOICE_CLASSES: dict[tuple[tuple[str, ...], tuple[tuple[str, Any], ...]], type[StageChoices]] = {}


def _choices_class(genes: tuple[str, ...]) -> type[StageChoices]:
    """The frozen dataclass of stage choices with a field per gene in `genes`."""
    every = {g.name: g.default for g in (*SHARED, *extra_genes().values())}
    # A space without a placement choice puts no activation anywhere, not the reference's.
    defaults = tuple((name, ("",) if name == "place" else (every[name],))
                     for name in genes if name not in ("block", "c"))
    key = (genes, defaults)
    if key not in _CHOICE_CLASSES:
        specs = [("block", tuple), ("c", tuple),
                 *((name, tuple, field(default=default)) for name, default in defaults)]
        cls = make_dataclass("StageChoices", specs, bases=(StageChoices,), frozen=True)
        cls.__module__ = __name__
        _CHOICE_CLASSES[key] = cls
    return _CHOICE_CLASSES[key]


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
    # (stage, channels in, width) -> the distinct stages there: enumerated once per space, as
    # size, cost range, the latency bound and `contains` all walk them
    _options: dict[tuple[int, int, float], frozenset[Stage]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # chosen genes, each with its type (True is not 1) -> the stage: each made and checked once,
    # though the enumeration meets it at every channel count and width
    _stages: dict[tuple, Stage] = field(default_factory=dict, init=False, repr=False, compare=False)

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
            stage = self._stage(genes, cin, width)
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

    def fixed_at(self, genotype: Genotype, genes: Sequence[str]) -> SearchSpace:
        """This space with each gene named in `genes` fixed at `genotype`'s value: a global
        gene (`GLOBAL_GENES`) once, a stage gene (`stage_genes()`) in every stage whose block
        type has it. `genotype` must be one of the space's."""
        stage_names = set(stage_genes())
        changes: dict[str, Any] = {}
        for gene in genes:
            if gene in GLOBAL_GENES:
                changes[gene] = (getattr(genotype, gene),)
            elif gene not in stage_names:
                raise ValueError(f"no gene {gene!r}; valid: {', '.join((*GLOBAL_GENES, *stage_genes()))}")
        stages = []
        for sc, st in zip(self.stages, genotype.stages, strict=True):
            own = set(_genes_of(st.block))
            fixed = {g: (getattr(st, g),) for g in genes if g in stage_names and g in own}
            stages.append(replace(sc, **fixed))
        return replace(self, stages=tuple(stages), **changes)

    # ----- enumeration ----------------------------------------------------------------
    def stage_options(self, i: int, cin: int, width: float) -> frozenset[Stage]:
        """Every distinct stage position `i` can hold after a stage ending in `cin` channels."""
        return self._stage_options(i, cin, width)

    def extreme(self, largest: bool = True) -> Genotype:
        """The space's largest (or smallest) genotype: every numeric gene at its largest (or
        smallest) choice, then each other gene at the choice with the most (or fewest) MACs,
        one gene at a time (ties keep the space's first choice). The sandwich rule of supernet
        training trains these two on every step."""
        def numeric(options: Sequence[Any]) -> bool:
            return all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in options)

        picks: dict[str, Any] = {}
        other: dict[str, list[Any]] = {}

        def choose(name: str, options: Sequence[Any]) -> Any:
            if name in picks:
                return picks[name] if picks[name] in options else options[0]
            if numeric(options):
                return max(options) if largest else min(options)
            other.setdefault(name, list(options))
            return options[0]

        g = self.decode(choose)
        for name in list(other):
            best, best_macs = None, None
            for option in other[name]:
                picks[name] = option
                macs = cost(self.decode(choose), 1000, 3).macs
                if best_macs is None or (macs > best_macs if largest else macs < best_macs):
                    best, best_macs = option, macs
            picks[name] = best
            g = self.decode(choose)
        return g

    def _stage_options(self, i: int, cin: int, width: float) -> frozenset[Stage]:
        """Distinct stages position `i` can hold after a stage ending in `cin` channels."""
        key = (i, cin, width)
        if key not in self._options:
            sc = self.stages[i]
            out: set[Stage] = set()
            for block in sc.block:
                names = _genes_of(block)[1:]
                for combo in itertools.product(*(getattr(sc, g) for g in names)):
                    genes = {"block": block, **dict(zip(names, combo, strict=True))}
                    out.add(self._stage(genes, cin, width))
            self._options[key] = frozenset(out)
        return self._options[key]

    def _stage(self, genes: dict[str, Any], cin: int, width: float) -> Stage:
        """The stage of the chosen `genes` after a stage ending in `cin` channels."""
        genes = _coerced(genes, cin, width)
        key = tuple((type(value), value) for value in genes.values())
        try:
            made = self._stages.get(key)
        except TypeError:  # an unhashable choice (placement letters as a list): made each time
            return Stage(**genes)
        if made is None:
            made = self._stages[key] = Stage(**genes)
        return made

    def fold(self, stem: Callable[[tuple[StemLayer, ...], float, int], V],
             stage: Callable[[int, Stage, int, int, float], V],
             head: Callable[[tuple[HeadLayer, ...], float, int, int], V],
             then: Callable[[V, V], V], either: Callable[[V, V], V]) -> V:
        """One dynamic programme over every genotype of the space, without enumerating them.

        Each part of a network has a value: `stem(layers, width, resolution)`, `stage(i, stage,
        cin, h, width)` for stage `i` entered with `cin` channels at size `h`, and `head(layers,
        width, cin, h)`. A network's value is its parts' values joined in order by `then`; the
        result is all networks' values joined by `either`, which must let alternatives that
        reach the same channels and size be merged early (a sum, a min, a max, ...). The state
        between stages is (width, channels, size), so every stage option is visited once per
        state rather than once per genotype. Size, cost range and the fastest latency are all
        this one programme with different values.
        """
        result: V | None = None
        for width in self.width:
            states: dict[tuple[int, int], V] = {}
            for layers in self.stem:
                for resolution in self.resolution:
                    key = (scale_channels(layers[-1].c, width), stem_out_size(layers, resolution))
                    _offer(states, key, stem(layers, width, resolution), either)
            for i in range(len(self.stages)):
                nxt: dict[tuple[int, int], V] = {}
                options: dict[int, list[tuple[Stage, int]]] = {}
                for (cin, h), acc in states.items():
                    if cin not in options:
                        options[cin] = [(option, scale_channels(option.c, width))
                                        for option in self._stage_options(i, cin, width)]
                    for option, cout in options[cin]:
                        key = (cout, block_out_size(h, option.s))
                        _offer(nxt, key, then(acc, stage(i, option, cin, h, width)), either)
                states = nxt
            for layers in self.head:
                for (cin, h), acc in states.items():
                    value = then(acc, head(layers, width, cin, h))
                    result = value if result is None else either(result, value)
        assert result is not None, "a space has at least one width, stem, head and resolution"
        return result

    def size(self) -> int:
        """Exact number of distinct genotypes in the space."""
        dropouts = len(self.dropout)
        return self.fold(lambda *_: 1, lambda *_: 1, lambda *_: dropouts, operator.mul, operator.add)

    def cost_range(self, num_classes: int = 1000, in_channels: int = 3) -> dict[str, tuple[int, int]]:
        """Exact smallest and largest MACs and params over the whole space (`fold`, so it costs
        milliseconds to seconds rather than an enumeration)."""

        def spread(part: PartCost) -> Range:
            return part.macs, part.macs, part.params, part.params

        seen: dict[tuple, Range] = {}
        costly: dict[str, Callable[[Stage], tuple]] = {}  # block -> its genes that change cost

        def stage(i: int, option: Stage, cin: int, h: int, width: float) -> Range:
            if option.block not in costly:
                # Activation function and placement change neither params nor MACs.
                names = [name for name in option.type.gene_order if name not in ("act", "place")]
                costly[option.block] = operator.attrgetter("block", *names)
            key = (costly[option.block](option), cin, h, width)
            if key not in seen:
                seen[key] = spread(stage_cost(i, option, cin, h, width))
            return seen[key]

        def head(layers: tuple[HeadLayer, ...], width: float, cin: int, h: int) -> Range:
            top = head_cost(layers, width, cin, h)
            return _then(spread(top), spread(classifier_cost(top.out_channels, num_classes)))

        lo_m, hi_m, lo_p, hi_p = self.fold(
            lambda layers, width, res: spread(stem_cost(layers, width, res, in_channels)),
            stage, head, _then, _either)
        return {"macs": (lo_m, hi_m), "params": (lo_p, hi_p)}


Range = tuple[int, int, int, int]  # smallest MACs, largest MACs, smallest params, largest params


def _then(a: Range, b: Range) -> Range:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]


def _either(a: Range, b: Range) -> Range:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _offer(states: dict[tuple[int, int], V], key: tuple[int, int], value: V,
           either: Callable[[V, V], V]) -> None:
    states[key] = value if key not in states else either(states[key], value)


def _label(option: tuple) -> str:
    return ":".join(map(str, option)) if option else "none"


def _coerced(genes: dict[str, Any], cin: int, width: float) -> dict[str, Any]:
    """The genes with the shortcut turned off where the stage's shapes cannot have one."""
    bt = BLOCK_TYPES[genes["block"]]
    cout = scale_channels(genes["c"], width)
    if genes.get("residual") and not bt.residual_possible(genes.get("n", 1), genes.get("s", 1),
                                                          cin, cout):
        return {**genes, "residual": False}
    return genes
