"""The genotype: one frozen, hashable description of a whole network.

Three lossless forms:
- the dataclasses below (`Genotype`, `StemLayer`, `Stage`, `HeadLayer`);
- a canonical string, parts joined by ":" (see `Genotype.__str__` and docs/spaces-and-genotypes.md);
- a plain dict / YAML document.

`parse(str(g)) == g` and `Genotype.from_dict(g.to_dict()) == g` hold for every valid
genotype, and `g.content_hash` is a stable digest of the canonical string.
Validation happens on construction; errors are `GenotypeError` (a `ValueError`)
whose message starts with the path of the bad field, e.g. ``stages[2].k``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from nas.arch.blocktypes import (
    BLOCK_TYPES,
    BlockType,
    block_out_size,
    extra_genes,
    gene_owners,
    on_registry_change,
    place_words,
    spelling_order,
    stage_genes,
)
from nas.arch.genes import (
    ACTIVATIONS,
    MAX_CHANNELS,
    MAX_EXPANSION,
    MAX_KERNEL,
    MAX_REPEATS,
    MAX_RESOLUTION,
    MAX_WIDTH,
    PADDING,
    PLACE,
    SHARED,
    STRIDES,
    Gene,
    GenotypeError,
    Token,
    check_choice,
    check_float,
    check_int,
    check_kernel,
)

__all__ = [
    "ACTIVATIONS",
    "DIVISOR",
    "HEAD_KINDS",
    "MAX_CHANNELS",
    "MAX_EXPANSION",
    "MAX_KERNEL",
    "MAX_REPEATS",
    "MAX_RESOLUTION",
    "MAX_WIDTH",
    "STRIDES",
    "BlockSpec",
    "Genotype",
    "GenotypeError",
    "HeadLayer",
    "Stage",
    "StemLayer",
    "head_channels",
    "load_genotype",
    "make_divisible",
    "parse",
    "scale_channels",
    "stage_blocks",
    "stem_channels",
    "stem_out_size",
]

HEAD_KINDS = ("conv", "sep")
DIVISOR = 8  # MobileNet channel rounding


def make_divisible(value: float, divisor: int = DIVISOR) -> int:
    """MobileNet rounding: nearest multiple of `divisor`, never below it nor 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_channels(c: int, width: float) -> int:
    """Channels of a layer declared with `c` at width multiplier `width`.

    At width 1.0 the declared count is used as written; otherwise the product is
    rounded the MobileNet way.
    """
    return c if width == 1.0 else make_divisible(c * width)


# ----- geometry of the parts of a network: the one place each shape rule lives --------------
def stem_channels(stem: tuple[StemLayer, ...], width: float) -> list[int]:
    """Output channels of each stem layer at width multiplier `width`."""
    return [scale_channels(layer.c, width) for layer in stem]


def head_channels(head: tuple[HeadLayer, ...], width: float) -> list[int]:
    """Output channels of each head layer: MobileNetV2 scales its last layer only up, never down."""
    return [scale_channels(layer.c, max(1.0, width)) for layer in head]


def stem_out_size(stem: tuple[StemLayer, ...], resolution: int) -> int:
    """Height (= width) of the stem's output for an input of `resolution` pixels."""
    h = resolution
    for layer in stem:
        h = layer.out_size(h)
    return h


def stage_blocks(i: int, stage: Stage, cin: int, h: int, width: float) -> Iterator[BlockSpec]:
    """The block instances of stage `i` entered with `cin` channels at size `h`: stride on the
    first repeat only, a shortcut on each repeat whose shapes allow it when `residual` is on.
    The stage leaves `block_out_size(h, stage.s)` pixels and `scale_channels(stage.c, width)`
    channels."""
    cout = scale_channels(stage.c, width)
    bt = stage.type
    for r in range(stage.n):
        stride = stage.s if r == 0 else 1
        shortcut = bt.shortcut_on_repeat(stage.residual, stride, cin, cout)
        yield BlockSpec(i, r, stage, cin, cout, stride, shortcut, h)
        h = block_out_size(h, stride)
        cin = cout


@dataclass(frozen=True)
class StemLayer:
    """conv k x k (stride s, padding p) + BN + activation."""

    c: int
    k: int = 3
    s: int = 1
    p: int | None = None  # None: k // 2
    act: str = "relu"

    def __post_init__(self) -> None:
        check_int("c", self.c, 1, "channels", MAX_CHANNELS)
        check_int("k", self.k, 1, "kernel size", MAX_KERNEL)
        check_int("s", self.s, 1, "stride")
        if self.p is None:
            object.__setattr__(self, "p", self.k // 2)
        check_int("p", self.p, 0, "padding")
        check_choice("act", self.act, ACTIVATIONS, "activation")

    def __str__(self) -> str:
        return f"stem_c{self.c}_k{self.k}_s{self.s}_p{self.p}_{self.act}"

    def out_size(self, h: int) -> int:
        """Output height (= width) of this conv for an input of height `h`."""
        return (h + 2 * self.p - self.k) // self.s + 1

    def to_dict(self) -> dict[str, Any]:
        return {"c": self.c, "k": self.k, "s": self.s, "p": self.p, "act": self.act}


@dataclass(frozen=True)
class HeadLayer:
    """Layer between the last stage and pooling: 1x1/kxk conv or separable conv, + BN + act."""

    c: int
    kind: str = "conv"
    k: int = 1
    act: str = "relu"

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, HEAD_KINDS, "head layer kind")
        check_int("c", self.c, 1, "channels", MAX_CHANNELS)
        check_kernel("k", self.k)
        check_choice("act", self.act, ACTIVATIONS, "activation")

    def __str__(self) -> str:
        return f"head_{self.kind}_c{self.c}_k{self.k}_{self.act}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "c": self.c, "k": self.k, "act": self.act}


def _normalize_place(block: BlockType, place: Any) -> str:
    """Canonical placement: the block type's letters in canonical order ("" for none)."""
    alphabet = block.placements
    words = place_words()
    if place is None:
        return block.reference_placement
    if isinstance(place, str):
        items = list(place) if place not in words else [place]
        if place in ("-", "none"):
            items = []
    elif isinstance(place, (list, tuple)):
        items = list(place)
    else:
        items = [place]
    letters = set()
    for item in items:
        letter = words.get(item, item) if isinstance(item, str) else item
        if letter not in alphabet:
            valid = ", ".join(f"{k} ({v})" for k, v in alphabet.items())
            raise GenotypeError(
                "place", f"{item!r} is not a valid activation position for {block.name} blocks; "
                f"valid letters: {valid}")
        letters.add(letter)
    return "".join(letter for letter in alphabet if letter in letters)


class Stage:
    """`n` repeats of one block type; only the first has stride `s` and changes channels to `c`.

    Every stage has the shared genes (`nas.arch.genes.SHARED`): `c`, `n`, `s`, `k`, `act`,
    `residual`, and `place`, the activation placement in letters of the block type's
    vocabulary (ir: e/d/p, xc: i/m/o, ds: d/p). `residual` puts a shortcut on every repeat whose
    shapes allow it (ir/ds: identity, stride 1 and equal channels; xc: identity or a 1x1 conv +
    BN projection). The block type's registry entry (`nas.arch.blocktypes`) adds its own genes
    and says how they are checked, printed and parsed: ir the expansion `t`; xc `m` separable
    convs per block, dw->pw ("dp") or pw->dw ("pd") `order`, which conv changes the channel
    count (`grow`) and whether the stage's very first conv gets its pre-activation
    (`lead_act`). Another block type's gene reads as its default and may only be given at it.

    A stage is an instance of its block type's own frozen dataclass (also named Stage), whose
    fields are exactly the genes that type has; arguments bind as if every registered gene
    were a field, in `stage_genes()` order.
    """

    block: str
    c: int
    n: int
    s: int
    k: int
    act: str
    place: str
    residual: bool

    def __new__(cls, *args: Any, **genes: Any) -> Stage:
        block = args[0] if args else genes.get("block")
        bt = BLOCK_TYPES.get(block) if isinstance(block, str) else None
        stage = object.__new__(Stage if bt is None else _plan(bt).cls)  # None: __init__ says why
        if not isinstance(stage, cls):  # dataclasses.replace gave it another block type
            stage.__init__(*args, **genes)
        return stage

    def __init__(self, block: str, c: int, *more: Any, **genes: Any) -> None:
        given = _bind(block, c, more, genes)
        if not isinstance(block, str) or block not in BLOCK_TYPES:
            check_choice("block", block, tuple(BLOCK_TYPES), "block type")
        # Frozen: the fields are written once, here, past the dataclass's __setattr__.
        self.__dict__.update(_stage_values(_plan(BLOCK_TYPES[block]), given))

    @property
    def type(self) -> BlockType:
        """The block type's registry entry."""
        return BLOCK_TYPES[self.block]

    def __str__(self) -> str:
        words = [write(getattr(self, name)) for name, write in _plan(self.type).spelling]
        return f"{self.block}_{'_'.join(words)}"

    def __repr__(self) -> str:
        return f"Stage({', '.join(f'{name}={getattr(self, name)!r}' for name in stage_genes())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _stage_of, (self.to_dict(),)

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, **{name: getattr(self, name) for name in self.type.gene_order}}


def _stage_of(genes: dict[str, Any]) -> Stage:
    """A stage from its dict form (how a stage is pickled and copied)."""
    return Stage(**genes)


@dataclass(frozen=True)
class _Plan:
    """How the stages of one block type are made and printed, for the registry as it is."""

    entry: BlockType
    cls: type[Stage]
    # (gene, default, its check, or None where the gene is another type's and must stay at
    # its default), in the order the genes are checked
    steps: tuple[tuple[str, Any, Callable[[str, Any], None] | None], ...]
    fields: tuple[tuple[str, Any], ...]  # (gene, default) in the dict form's order
    spelling: tuple[tuple[str, Callable[[Any], str]], ...]  # (gene, its token's writer)


_PLANS: dict[str, _Plan] = {}  # block name -> plan; emptied when the registry changes
_CLASSES: dict[str, tuple[BlockType, type[Stage]]] = {}  # block name -> (entry, its dataclass)


def _plan(bt: BlockType) -> _Plan:
    """The plan of block type `bt` for the registry as it is."""
    plan = _PLANS.get(bt.name)
    if plan is None or plan.entry is not bt:
        plan = _PLANS[bt.name] = _make_plan(bt, _stage_class(bt))
    return plan


def _stage_class(bt: BlockType) -> type[Stage]:
    """The frozen dataclass of the stages of block type `bt`: a field per gene it has."""
    entry, cls = _CLASSES.get(bt.name, (None, Stage))
    if entry is not bt:  # new, or registered anew
        taken = [name for name in bt.gene_order if hasattr(Stage, name)]
        if taken:
            raise ValueError(f"block type {bt.name}: a gene cannot be called {', '.join(taken)}, "
                             "which Stage already has")
        cls = make_dataclass("Stage", [("block", str), *((name, Any) for name in bt.gene_order)],
                             bases=(Stage,), init=False, repr=False, frozen=True)
        cls.__module__ = __name__
        _read_others_at_default(cls, bt)
        _CLASSES[bt.name] = (bt, cls)
    return cls


def _read_others_at_default(cls: type[Stage], bt: BlockType) -> None:
    """Every other registered type's gene reads as its default on `bt`'s stages (a ds stage has
    t == 1): class attributes, not fields, so they stay out of equality, hash and `fields`."""
    for name in cls.__dict__.get("_others", ()):
        delattr(cls, name)
    others = {name: gene.default for name, gene in extra_genes().items()
              if name not in bt.by_name and not hasattr(Stage, name)}
    for name, default in others.items():
        setattr(cls, name, default)
    cls._others = tuple(others)


def _registry_changed() -> None:
    _PLANS.clear()
    for bt, cls in _CLASSES.values():
        _read_others_at_default(cls, bt)


on_registry_change(_registry_changed)


def _make_plan(bt: BlockType, cls: type[Stage]) -> _Plan:
    steps = [(g.name, g.default, g.check) for g in SHARED]
    steps += [(g.name, g.default, g.check if g.name in bt.by_name else None)
              for g in extra_genes().values()]
    fields_ = tuple((name, bt.by_name[name].default) for name in bt.gene_order)
    spelling = tuple((name, bt.by_name[name].token.write) for name in bt.spelling)
    return _Plan(bt, cls, tuple(steps), fields_, spelling)


def _bind(block: Any, c: Any, more: tuple[Any, ...], genes: dict[str, Any]) -> dict[str, Any]:
    """Stage's arguments by name, bound (and refused) as a dataclass with every registered gene
    as a field would bind them."""
    names = stage_genes()
    if not genes.keys() <= set(names):
        unknown = next(name for name in genes if name not in names)
        raise TypeError(f"Stage.__init__() got an unexpected keyword argument '{unknown}'")
    given = {"block": block, "c": c, **genes}
    if more:
        rest = [name for name in names if name not in ("block", "c")]
        if len(more) > len(rest):
            raise TypeError(f"Stage.__init__() takes from 3 to {len(names) + 1} positional "
                            f"arguments but {len(more) + 3} were given")
        for name, value in zip(rest, more, strict=False):
            if name in genes:
                raise TypeError(f"Stage.__init__() got multiple values for argument '{name}'")
            given[name] = value
    return given


def _stage_values(plan: _Plan, given: dict[str, Any]) -> dict[str, Any]:
    """The checked genes of a stage, in its block type's dict order and one spelling; genes not
    given take their defaults."""
    for name, default, check in plan.steps:
        value = given.get(name, default)
        if check is not None:
            check(name, value)
        elif value != default:
            raise GenotypeError(name, _misplaced(extra_genes()[name], value, plan.entry))
    bt = plan.entry
    values = {name: given.get(name, default) for name, default in plan.fields}
    values["place"] = _normalize_place(bt, values["place"])
    values = bt.canonical(values)
    values["block"] = bt.name
    return values


def _misplaced(gene: Gene, value: Any, bt: BlockType) -> str:
    return gene.misplaced.format(value=value, name=gene.name, default=gene.default,
                                 owners=", ".join(gene_owners(gene.name)), block=bt.name)


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """One block instance of a genotype with its resolved shapes."""

    stage: int
    repeat: int
    gene: Stage
    cin: int
    cout: int
    stride: int
    shortcut: bool
    h_in: int


@dataclass(frozen=True)
class Genotype:
    """A whole network: stem, stages, head and global genes."""

    stages: tuple[Stage, ...]
    stem: tuple[StemLayer, ...] = (StemLayer(c=32, k=3, s=2),)
    head: tuple[HeadLayer, ...] = ()
    width: float = 1.0
    resolution: int = 224
    dropout: float = 0.0
    _str: str = field(default="", init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("stages", "stem", "head"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
            else:
                raise GenotypeError(name, f"{value!r} is not valid: expected a list")
        for name, cls in (("stem", StemLayer), ("stages", Stage), ("head", HeadLayer)):
            for i, item in enumerate(getattr(self, name)):
                if not isinstance(item, cls):
                    raise GenotypeError(f"{name}[{i}]", f"{item!r} is not a {cls.__name__}")
        if not self.stages:
            raise GenotypeError("stages", "a genotype needs at least one stage")
        if not self.stem:
            raise GenotypeError("stem", "a genotype needs at least one stem layer")
        width = check_float("width", self.width, 0.0, MAX_WIDTH, "width multiplier", low_open=True)
        object.__setattr__(self, "width", width)
        check_int("resolution", self.resolution, 1, "input resolution", MAX_RESOLUTION)
        dropout = check_float("dropout", self.dropout, 0.0, 1.0, "dropout", high_open=True)
        object.__setattr__(self, "dropout", dropout)
        h = self.resolution
        for i, layer in enumerate(self.stem):
            h = layer.out_size(h)
            if h < 1:
                raise GenotypeError(
                    f"stem[{i}]", f"a {layer.k}x{layer.k} conv with padding {layer.p} leaves no "
                    f"pixels at input resolution {self.resolution}; raise the resolution or padding")
        cin = scale_channels(self.stem[-1].c, width)
        for i, st in enumerate(self.stages):
            cout = scale_channels(st.c, width)
            if st.residual and not st.type.residual_possible(st.n, st.s, cin, cout):
                raise GenotypeError(
                    f"stages[{i}].residual",
                    f"a shortcut is impossible here: one {st.block} block with stride {st.s} "
                    f"from {cin} to {cout} channels has no repeat with stride 1 and equal "
                    "channels; set residual false or n >= 2")
            cin = cout
        object.__setattr__(self, "_str", self._encode())

    # ----- shapes -----------------------------------------------------------------
    def stem_out_size(self) -> int:
        """Height (= width) of the stem's output feature map."""
        return stem_out_size(self.stem, self.resolution)

    def stem_channels(self) -> list[int]:
        return stem_channels(self.stem, self.width)

    def head_channels(self) -> list[int]:
        return head_channels(self.head, self.width)

    def blocks(self) -> Iterator[BlockSpec]:
        """Every block instance in order, with its input size and channels."""
        h = self.stem_out_size()
        cin = scale_channels(self.stem[-1].c, self.width)
        for i, st in enumerate(self.stages):
            yield from stage_blocks(i, st, cin, h, self.width)
            cin = scale_channels(st.c, self.width)
            h = block_out_size(h, st.s)

    # ----- codecs -----------------------------------------------------------------
    def _encode(self) -> str:
        head = f"res{self.resolution}_w{self.width!r}_drop{self.dropout!r}"
        return ":".join([head, *map(str, self.stem), *map(str, self.stages),
                         *map(str, self.head)])

    def __str__(self) -> str:
        return self._str

    @property
    def content_hash(self) -> str:
        """Stable 16-hex-digit digest of the canonical string."""
        return hashlib.sha256(self._str.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "width": self.width,
            "dropout": self.dropout,
            "stem": [layer.to_dict() for layer in self.stem],
            "stages": [st.to_dict() for st in self.stages],
            "head": [layer.to_dict() for layer in self.head],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Build from the dict form; unknown keys and bad values raise `GenotypeError`."""
        if not isinstance(data, Mapping):
            raise GenotypeError("", f"a genotype must be a mapping, got {type(data).__name__}")
        top = ("resolution", "width", "dropout", "stem", "stages", "head")
        _check_keys("", data, top)
        if "stages" not in data:
            raise GenotypeError("stages", "missing: a genotype needs a list of stages")
        kwargs: dict[str, Any] = {k: data[k] for k in ("resolution", "width", "dropout")
                                  if k in data}
        for name, cls_ in (("stem", StemLayer), ("stages", Stage), ("head", HeadLayer)):
            if name not in data:
                continue
            items = data[name]
            if not isinstance(items, (list, tuple)):
                raise GenotypeError(name, f"{items!r} is not valid: expected a list")
            built = []
            for i, item in enumerate(items):
                if not isinstance(item, Mapping):
                    raise GenotypeError(f"{name}[{i}]", f"{item!r} is not a mapping")
                valid = stage_genes() if cls_ is Stage else tuple(f.name for f in fields(cls_))
                _check_keys(f"{name}[{i}]", item, valid)
                try:
                    built.append(cls_(**item))
                except GenotypeError as err:
                    raise err.at(f"{name}[{i}]") from None
                except TypeError as err:  # a required field is missing
                    raise GenotypeError(f"{name}[{i}]", str(err).split(".__init__() ")[-1]) from None
            kwargs[name] = tuple(built)
        return cls(**kwargs)

    def to_yaml(self) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)
        return f"# {self}\n{text}"

    @classmethod
    def from_yaml(cls, text: str) -> Genotype:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise GenotypeError("", f"not valid YAML: {str(err).splitlines()[0]}") from None
        if isinstance(data, Mapping) and "genotype" in data and "stages" not in data:
            data = data["genotype"]
        return cls.from_dict(data)


def _check_keys(path: str, data: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    for key in data:
        if key not in valid:
            where = f"{path}.{key}" if path else str(key)
            raise GenotypeError(where, f"unknown field {key!r}; valid fields: {', '.join(valid)}")


# ----- string parsing ---------------------------------------------------------------
def _tokens() -> dict[str, Token]:
    """Gene name -> token, for every token a part may hold (a stage's, the stem's padding, and
    every block type's genes): no two read the same text (`blocktypes.register` sees to it)."""
    return {g.name: g.token for g in (*SHARED, PLACE, PADDING, *extra_genes().values())}


def _stage_forms() -> str:
    """Every block type's stage pattern, e.g. ir_r<n>_k<k>_s<s>_e<t>_c<c>_..."""
    return ", ".join("_".join([bt.name, *(bt.by_name[name].token.usage(name) for name in bt.spelling)])
                     for bt in BLOCK_TYPES.values())


def _token_forms(tokens: dict[str, Token]) -> str:
    """The valid tokens: numbers, the stem's padding, words, then the activations."""
    names = [name for name in spelling_order() if name != "act"]
    numbers = [tokens[name].form() for name in names if tokens[name].numeric]
    words = [tokens[name].form() for name in names if not tokens[name].numeric]
    return f"{' '.join([*numbers, PADDING.token.form(), *words])} and activations {tokens['act'].form()}"


def _parse_tokens(where: str, tokens: list[str], allowed: set[str],
                  table: dict[str, Token]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        key = next((name for name, token in table.items() if token.matches(tok)), None)
        if key is None:
            raise GenotypeError(where, f"unknown token {tok!r}; valid tokens: {_token_forms(table)}")
        if key not in allowed:
            raise GenotypeError(where, f"token {tok!r} sets {key!r}, which this part does not take")
        if key in out:
            raise GenotypeError(where, f"token {tok!r} repeats field {key!r}")
        out[key] = table[key].read(tok)
    return out


def parse(text: str) -> Genotype:
    """Parse a genotype string (the canonical form `str(genotype)`).

    Fields may come in any order inside a part and omitted ones take their defaults,
    but `str()` always prints the one canonical spelling.
    """
    if not isinstance(text, str) or not text.strip():
        raise GenotypeError("", "empty genotype string")
    parts = [p.strip() for p in text.strip().split(":")]
    glob = re.fullmatch(r"res(\d+)_w([0-9.eE+-]+)_drop([0-9.eE+-]+)", parts[0])
    if not glob:
        raise GenotypeError(
            "part 1", f"{parts[0]!r} is not a global part; expected res<resolution>_w<width>_"
            "drop<dropout>, e.g. res224_w1.0_drop0.2")
    try:
        width, dropout = float(glob.group(2)), float(glob.group(3))
    except ValueError:
        raise GenotypeError("part 1", f"{parts[0]!r}: width and dropout must be numbers") from None
    table = _tokens()
    stem: list[StemLayer] = []
    stages: list[Stage] = []
    head: list[HeadLayer] = []
    for idx, part in enumerate(parts[1:], start=2):
        context = f" (in part {idx} {part!r})"
        where = f"part {idx}"
        if part.split("_")[0] in BLOCK_TYPES:
            where = f"stages[{len(stages)}]"
        elif part.startswith(("stem_", "head_")):
            where = f"{part[:4]}[{len(stem) if part[:4] == 'stem' else len(head)}]"
        tokens = part.split("_")
        kind = tokens[0]
        try:
            if kind == "stem":
                if stages or head:
                    raise GenotypeError(where, "stem layers must come before the stages")
                kw = _parse_tokens(where, tokens[1:], {"c", "k", "s", "p", "act"}, table)
                stem.append(_make(where, StemLayer, kw))
            elif kind in BLOCK_TYPES:
                if head:
                    raise GenotypeError(where, "stages must come before the head")
                kw = _parse_tokens(where, tokens[1:], set(BLOCK_TYPES[kind].by_name), table)
                stages.append(_make(where, Stage, {"block": kind, **kw}))
            elif kind == "head":
                if len(tokens) < 2 or tokens[1] not in HEAD_KINDS:
                    raise GenotypeError(where, "a head part starts with head_conv or head_sep")
                kw = _parse_tokens(where, tokens[2:], {"c", "k", "act"}, table)
                head.append(_make(where, HeadLayer, {"kind": tokens[1], **kw}))
            else:
                raise GenotypeError(
                    where, f"unknown part kind {kind!r}; valid: stem, {', '.join(BLOCK_TYPES)}, "
                    f"head (stage forms: {_stage_forms()})")
        except GenotypeError as err:
            if err.path.startswith(where):
                raise GenotypeError(err.path, err.reason + context) from None
            raise GenotypeError(err.at(where).path, err.reason + context) from None
    if not stages:
        raise GenotypeError("stages", "a genotype string needs at least one stage part")
    kwargs: dict[str, Any] = {"stages": tuple(stages), "head": tuple(head), "width": width,
                              "resolution": int(glob.group(1)), "dropout": dropout}
    if stem:
        kwargs["stem"] = tuple(stem)
    return Genotype(**kwargs)


def _make(where: str, cls: type, kw: dict[str, Any]) -> Any:
    if "c" not in kw:
        raise GenotypeError(where, "missing the channel token c<channels>")
    return cls(**kw)


def _dangling_link(path) -> bool:
    """Whether `path` is a symbolic link to nothing, or a loop of links."""
    try:
        return path.is_symlink() and not path.exists()
    except OSError:  # a name too long for a file name, say: not a link
        return False


def load_genotype(value: str) -> Genotype:
    """A genotype from a string, or from a path to a YAML file holding one."""
    from pathlib import Path

    text = value.strip()
    if not text:
        raise GenotypeError("", "the genotype is empty: give a genotype string (res224_w1.0_drop0.2:...), "
                                "a genotype.yaml or a genotype.txt")
    path = Path(text).expanduser()
    if ":" not in text and _dangling_link(path):
        raise GenotypeError("", f"genotype file {text!r} is a broken symbolic link or a loop of them: give "
                                "a genotype.yaml, a genotype.txt or a genotype string")
    if text.endswith((".yaml", ".yml", ".txt")) or (":" not in text and path.exists()):
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise GenotypeError("", f"genotype file {text!r} {what}: give a genotype.yaml, "
                                    "a genotype.txt or a genotype string")
        try:
            body = path.read_bytes()[:1_000_000].decode("utf-8")
        except (UnicodeDecodeError, OSError) as err:
            raise GenotypeError("", f"genotype file {text!r} cannot be read as text "
                                    f"({type(err).__name__}): give a genotype.yaml or .txt") from None
        if "\x00" in body:
            raise GenotypeError("", f"genotype file {text!r} is binary: give a genotype.yaml or .txt")
        stripped = "\n".join(line for line in body.splitlines() if not line.startswith("#")).strip()
        try:
            if stripped.startswith("res") and "\n" not in stripped:  # genotype.txt: the string
                return parse(stripped)
            return Genotype.from_yaml(body)
        except GenotypeError as err:
            raise GenotypeError("", f"genotype file {text!r}: {err}") from None
    return parse(text)
