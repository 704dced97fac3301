"""The genotype: one frozen, hashable description of a whole network.

Three lossless forms:
- the dataclasses below (`Genotype`, `StemLayer`, `Stage`, `HeadLayer`);
- a canonical string, parts joined by ":" (see `Genotype.__str__` and the README);
- a plain dict / YAML document.

`parse(str(g)) == g` and `Genotype.from_dict(g.to_dict()) == g` hold for every valid
genotype, and `g.content_hash` is a stable digest of the canonical string.
Validation happens on construction; errors are `GenotypeError` (a `ValueError`)
whose message starts with the path of the bad field, e.g. ``stages[2].k``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from nas.arch.blocktypes import BLOCK_TYPES, BlockType, block_out_size
from nas.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "DIVISOR",
    "GROWS",
    "HEAD_KINDS",
    "MAX_CHANNELS",
    "MAX_EXPANSION",
    "MAX_KERNEL",
    "MAX_REPEATS",
    "MAX_RESOLUTION",
    "MAX_WIDTH",
    "ORDERS",
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

ACTIVATIONS = ("relu", "relu6", "hswish", "silu")
ORDERS = ("dp", "pd")  # xc: depthwise then pointwise (Xception), or the reverse
GROWS = ("first", "last")  # xc: which separable conv changes the channel count
HEAD_KINDS = ("conv", "sep")
STRIDES = (1, 2)
DIVISOR = 8  # MobileNet channel rounding
# The largest genes any command accepts (the search, training, costing, latency, export): far
# beyond every space here, small enough that a network of them can be built and costed.
MAX_RESOLUTION = 1024  # pixels; beyond this a batch of feature maps no longer fits in memory
MAX_WIDTH = 4.0
MAX_CHANNELS = 16384
MAX_KERNEL = 31
MAX_REPEATS = 64
MAX_EXPANSION = 64


class GenotypeError(UserError):
    """A genotype that cannot describe a network; `path` names the bad field."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)

    def at(self, prefix: str) -> GenotypeError:
        """The same error seen from an enclosing object."""
        if not self.path:
            return GenotypeError(prefix, self.reason)
        sep = "" if self.path.startswith("[") else "."
        return GenotypeError(f"{prefix}{sep}{self.path}", self.reason)


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


def _check_int(path: str, value: Any, minimum: int, what: str, maximum: int | None = None) -> None:
    valid = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenotypeError(path, f"{value!r} is not valid: {what} must be {valid}")
    if value < minimum or (maximum is not None and value > maximum):
        raise GenotypeError(path, f"{value} is not valid: {what} must be {valid}")


def _check_kernel(path: str, value: Any) -> None:
    _check_int(path, value, 1, "kernel size", MAX_KERNEL)
    if value % 2 == 0:
        raise GenotypeError(path, f"{value} is not valid: kernel size must be odd (1, 3, 5, 7, ...)")


def _check_choice(path: str, value: Any, valid: tuple, what: str) -> None:
    if isinstance(value, bool) or value not in valid:
        raise GenotypeError(
            path, f"{value!r} is not a valid {what}; valid: {', '.join(map(str, valid))}")


def _check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise GenotypeError(path, f"{value!r} is not valid: expected true or false")


def _check_float(path: str, value: Any, low: float, high: float | None, what: str,
                 low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise GenotypeError(path, f"{value!r} is not valid: {what} must be a number")
    lo_ok = value > low if low_open else value >= low
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise GenotypeError(path, f"{value} is not valid: {what} must be {lo}{hi}")
    return float(value)


@dataclass(frozen=True)
class StemLayer:
    """conv k x k (stride s, padding p) + BN + activation."""

    c: int
    k: int = 3
    s: int = 1
    p: int | None = None  # None: k // 2
    act: str = "relu"

    def __post_init__(self) -> None:
        _check_int("c", self.c, 1, "channels", MAX_CHANNELS)
        _check_int("k", self.k, 1, "kernel size", MAX_KERNEL)
        _check_int("s", self.s, 1, "stride")
        if self.p is None:
            object.__setattr__(self, "p", self.k // 2)
        _check_int("p", self.p, 0, "padding")
        _check_choice("act", self.act, ACTIVATIONS, "activation")

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
        _check_choice("kind", self.kind, HEAD_KINDS, "head layer kind")
        _check_int("c", self.c, 1, "channels", MAX_CHANNELS)
        _check_kernel("k", self.k)
        _check_choice("act", self.act, ACTIVATIONS, "activation")

    def __str__(self) -> str:
        return f"head_{self.kind}_c{self.c}_k{self.k}_{self.act}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "c": self.c, "k": self.k, "act": self.act}


def _normalize_place(block: BlockType, place: Any) -> str:
    """Canonical placement: the block type's letters in canonical order ("" for none)."""
    alphabet = block.placements
    words = {"pre": "i", "mid": "m", "post": "o", "expand": "e", "dw": "d", "depthwise": "d",
             "project": "p", "pw": "p", "pointwise": "p"}
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


@dataclass(frozen=True)
class Stage:
    """`n` repeats of one block type; only the first has stride `s` and changes channels to `c`.

    `place` is the activation placement, letters from the block type's vocabulary
    (ir: e/d/p, xc: i/m/o, ds: d/p). `residual` puts a shortcut on every repeat whose
    shapes allow it (ir/ds: identity, stride 1 and equal channels; xc: identity or a
    1x1 conv + BN projection). `m`, `order`, `grow` and `lead_act` are Xception genes:
    separable convs per block, dw->pw ("dp") or pw->dw ("pd"), which conv changes the
    channel count, and whether the stage's very first conv gets its pre-activation.
    """

    block: str
    c: int
    n: int = 1
    s: int = 1
    k: int = 3
    t: int = 1
    act: str = "relu"
    place: str | None = None
    residual: bool = False
    m: int = 1
    order: str = "dp"
    grow: str = "first"
    lead_act: bool = True

    def __post_init__(self) -> None:
        _check_choice("block", self.block, tuple(BLOCK_TYPES), "block type")
        bt = BLOCK_TYPES[self.block]
        _check_int("c", self.c, 1, "channels", MAX_CHANNELS)
        _check_int("n", self.n, 1, "repeats", MAX_REPEATS)
        _check_choice("s", self.s, STRIDES, "stride")
        _check_kernel("k", self.k)
        _check_choice("act", self.act, ACTIVATIONS, "activation")
        _check_bool("residual", self.residual)
        if "t" in bt.extra_genes:
            _check_int("t", self.t, 1, "expansion t", MAX_EXPANSION)
        elif self.t != 1:
            raise GenotypeError("t", f"{self.t!r} is not valid: expansion applies only to ir "
                                f"blocks, {self.block} blocks need t = 1")
        defaults = {"m": 1, "order": "dp", "grow": "first", "lead_act": True}
        if "m" in bt.extra_genes:
            _check_int("m", self.m, 1, "separable convs per block m", MAX_REPEATS)
            _check_choice("order", self.order, ORDERS, "order")
            _check_choice("grow", self.grow, GROWS, "grow position")
            _check_bool("lead_act", self.lead_act)
        else:
            for name, default in defaults.items():
                if getattr(self, name) != default:
                    raise GenotypeError(name, f"{getattr(self, name)!r} is not valid: {name} "
                                        f"applies only to xc blocks (leave it at {default!r})")
        place = _normalize_place(bt, self.place)
        # One spelling per network: positions whose layer does not exist are dropped,
        # and lead_act only matters when there is a pre-activation.
        if self.block == "ir" and self.t == 1:
            place = place.replace("e", "")
        object.__setattr__(self, "place", place)
        if self.block == "xc" and "i" not in place:
            object.__setattr__(self, "lead_act", True)

    @property
    def type(self) -> BlockType:
        return BLOCK_TYPES[self.block]

    def __str__(self) -> str:
        parts = [self.block, f"r{self.n}", f"k{self.k}", f"s{self.s}"]
        if self.block == "ir":
            parts.append(f"e{self.t}")
        parts.append(f"c{self.c}")
        if self.block == "xc":
            parts += [f"m{self.m}", self.order, f"g{self.grow}"]
        parts += [f"a{self.place or '-'}", self.act, "skip" if self.residual else "noskip"]
        if self.block == "xc":
            parts.append("lead" if self.lead_act else "nolead")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"block": self.block, "c": self.c, "n": self.n, "s": self.s,
                             "k": self.k}
        if self.block == "ir":
            d["t"] = self.t
        d.update(act=self.act, place=self.place, residual=self.residual)
        if self.block == "xc":
            d.update(m=self.m, order=self.order, grow=self.grow, lead_act=self.lead_act)
        return d


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
        width = _check_float("width", self.width, 0.0, MAX_WIDTH, "width multiplier", low_open=True)
        object.__setattr__(self, "width", width)
        _check_int("resolution", self.resolution, 1, "input resolution", MAX_RESOLUTION)
        dropout = _check_float("dropout", self.dropout, 0.0, 1.0, "dropout", high_open=True)
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
                valid = tuple(f.name for f in fields(cls_))
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
_INT_FIELDS = {"r": "n", "k": "k", "s": "s", "e": "t", "c": "c", "m": "m", "p": "p"}
_STAGE_FORM = ("ir_r<n>_k<k>_s<s>_e<t>_c<c>_a<place>_<act>_<skip|noskip>, "
               "xc_r<n>_k<k>_s<s>_c<c>_m<m>_<dp|pd>_g<first|last>_a<place>_<act>_<skip|noskip>_"
               "<lead|nolead>, ds_r<n>_k<k>_s<s>_c<c>_a<place>_<act>_<skip|noskip>")


_TOKEN_FORMS = ("r<repeats> k<kernel> s<stride> e<expansion> c<channels> m<convs> p<padding> "
                "a<placement letters or -> skip|noskip dp|pd gfirst|glast lead|nolead and "
                f"activations {'|'.join(ACTIVATIONS)}")


def _parse_tokens(where: str, tokens: list[str], allowed: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def put(key: str, value: Any, token: str) -> None:
        if key not in allowed:
            raise GenotypeError(where, f"token {token!r} sets {key!r}, which this part does not take")
        if key in out:
            raise GenotypeError(where, f"token {token!r} repeats field {key!r}")
        out[key] = value

    for tok in tokens:
        if tok in ACTIVATIONS:
            put("act", tok, tok)
        elif tok in ("skip", "noskip"):
            put("residual", tok == "skip", tok)
        elif tok in ("lead", "nolead"):
            put("lead_act", tok == "lead", tok)
        elif tok in ORDERS:
            put("order", tok, tok)
        elif tok in ("gfirst", "glast"):
            put("grow", tok[1:], tok)
        elif tok.startswith("a") and re.fullmatch(r"a([a-z]+|-)", tok):
            put("place", "" if tok == "a-" else tok[1:], tok)
        elif m := re.fullmatch(r"([rksecmp])(\d+)", tok):
            put(_INT_FIELDS[m.group(1)], int(m.group(2)), tok)
        else:
            raise GenotypeError(where, f"unknown token {tok!r}; valid tokens: {_TOKEN_FORMS}")
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
                kw = _parse_tokens(where, tokens[1:], {"c", "k", "s", "p", "act"})
                stem.append(_make(where, StemLayer, kw))
            elif kind in BLOCK_TYPES:
                if head:
                    raise GenotypeError(where, "stages must come before the head")
                allowed = {"n", "k", "s", "c", "place", "act", "residual"}
                allowed.update({"t"} if kind == "ir" else set())
                allowed.update({"m", "order", "grow", "lead_act"} if kind == "xc" else set())
                kw = _parse_tokens(where, tokens[1:], allowed)
                stages.append(_make(where, Stage, {"block": kind, **kw}))
            elif kind == "head":
                if len(tokens) < 2 or tokens[1] not in HEAD_KINDS:
                    raise GenotypeError(where, "a head part starts with head_conv or head_sep")
                kw = _parse_tokens(where, tokens[2:], {"c", "k", "act"})
                head.append(_make(where, HeadLayer, {"kind": tokens[1], **kw}))
            else:
                raise GenotypeError(
                    where, f"unknown part kind {kind!r}; valid: stem, {', '.join(BLOCK_TYPES)}, "
                    f"head (stage forms: {_STAGE_FORM})")
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
