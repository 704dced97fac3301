"""Genes: what one gene of a stage is, how it is checked and how it is spelled.

A `Gene` is a name, a default, a check and a token (its spelling in the genotype string).
`SHARED` and `PLACE` are the genes every stage has; each block type in
`nas.arch.blocktypes` adds its own. The checks raise `GenotypeError`, whose path names the
bad field; the limits below bound every gene any command accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nas.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "MAX_CHANNELS",
    "MAX_EXPANSION",
    "MAX_KERNEL",
    "MAX_REPEATS",
    "MAX_RESOLUTION",
    "MAX_WIDTH",
    "PADDING",
    "PLACE",
    "SHARED",
    "SHARED_ORDER",
    "SHARED_SPELLING",
    "STRIDES",
    "Gene",
    "GenotypeError",
    "IntToken",
    "PlaceToken",
    "Token",
    "WordToken",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_kernel",
    "in_range",
    "one_of",
]

ACTIVATIONS = ("relu", "relu6", "hswish", "silu")
STRIDES = (1, 2)
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


# ----- checks: each raises GenotypeError at `path` ---------------------------------------------
def check_int(path: str, value: Any, minimum: int, what: str, maximum: int | None = None) -> None:
    """An integer (not a bool) in [minimum, maximum]."""
    valid = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenotypeError(path, f"{value!r} is not valid: {what} must be {valid}")
    if value < minimum or (maximum is not None and value > maximum):
        raise GenotypeError(path, f"{value} is not valid: {what} must be {valid}")


def check_kernel(path: str, value: Any) -> None:
    """An odd kernel size up to `MAX_KERNEL`."""
    check_int(path, value, 1, "kernel size", MAX_KERNEL)
    if value % 2 == 0:
        raise GenotypeError(path, f"{value} is not valid: kernel size must be odd (1, 3, 5, 7, ...)")


def check_choice(path: str, value: Any, valid: tuple, what: str) -> None:
    """One of `valid` (never a bool standing in for 0 or 1)."""
    if isinstance(value, bool) or value not in valid:
        raise GenotypeError(
            path, f"{value!r} is not a valid {what}; valid: {', '.join(map(str, valid))}")


def check_bool(path: str, value: Any) -> None:
    """True or False."""
    if not isinstance(value, bool):
        raise GenotypeError(path, f"{value!r} is not valid: expected true or false")


def check_float(path: str, value: Any, low: float, high: float | None, what: str,
                low_open: bool = False, high_open: bool = False) -> float:
    """A number within the bounds (open or closed); returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise GenotypeError(path, f"{value!r} is not valid: {what} must be a number")
    lo_ok = value > low if low_open else value >= low
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise GenotypeError(path, f"{value} is not valid: {what} must be {lo}{hi}")
    return float(value)


def in_range(minimum: int, what: str, maximum: int | None = None) -> Callable[[str, Any], None]:
    """A gene's check: an integer in [minimum, maximum] (`check_int`)."""

    def check(path: str, value: Any) -> None:
        check_int(path, value, minimum, what, maximum)

    return check


def one_of(valid: tuple, what: str) -> Callable[[str, Any], None]:
    """A gene's check: one of `valid` (`check_choice`)."""

    def check(path: str, value: Any) -> None:
        check_choice(path, value, valid, what)

    return check


# ----- tokens: a gene's spelling inside one "_"-separated part of the string ---------------
class Token(Protocol):
    """How a gene is written in the string, and read back."""

    # Numbers are listed before words in the parser's list of valid tokens.
    numeric: bool

    def matches(self, token: str) -> bool:
        """Whether `token` spells a value of this gene."""

    def read(self, token: str) -> Any:
        """The value a matching `token` spells."""

    def write(self, value: Any) -> str:
        """The one canonical token of `value`."""

    def usage(self, name: str) -> str:
        """The token's pattern in a stage form, e.g. ``e<t>``."""

    def form(self) -> str:
        """The token's pattern in the list of valid tokens, e.g. ``e<expansion>``."""

    def samples(self) -> tuple[str, ...]:
        """Tokens it reads: two genes' tokens clash when one reads the other's samples."""


@dataclass(frozen=True)
class IntToken:
    """A letter and a number: ``e6``."""

    prefix: str
    meaning: str
    numeric = True

    def matches(self, token: str) -> bool:
        # isdecimal() is what \d+ matches (any Unicode decimal digit), and what int() reads.
        return token.startswith(self.prefix) and token[len(self.prefix):].isdecimal()

    def read(self, token: str) -> int:
        return int(token[len(self.prefix):])

    def write(self, value: Any) -> str:
        return f"{self.prefix}{value}"

    def usage(self, name: str) -> str:
        return f"{self.prefix}<{name}>"

    def form(self) -> str:
        return f"{self.prefix}<{self.meaning}>"

    def samples(self) -> tuple[str, ...]:
        return (f"{self.prefix}0",)


@dataclass(frozen=True)
class WordToken:
    """One word per value after an optional prefix: ``skip``/``noskip``, ``gfirst``/``glast``."""

    words: Mapping[str, Any]  # word -> value
    prefix: str = ""
    label: str = ""  # the stage form's placeholder instead of every word, e.g. "act"
    numeric = False
    _tokens: Mapping[Any, str] = field(init=False, repr=False, compare=False)  # value -> token

    def __post_init__(self) -> None:
        tokens = {value: self.prefix + word for word, value in reversed(self.words.items())}
        object.__setattr__(self, "_tokens", tokens)

    def matches(self, token: str) -> bool:
        return token.startswith(self.prefix) and token[len(self.prefix):] in self.words

    def read(self, token: str) -> Any:
        return self.words[token[len(self.prefix):]]

    def write(self, value: Any) -> str:
        return self._tokens[value]

    def usage(self, name: str) -> str:
        return f"{self.prefix}<{self.label or '|'.join(self.words)}>"

    def form(self) -> str:
        return "|".join(self.prefix + word for word in self.words)

    def samples(self) -> tuple[str, ...]:
        return tuple(self.prefix + word for word in self.words)


_PLACE_TOKEN = re.compile(r"a([a-z]+|-)")


@dataclass(frozen=True)
class PlaceToken:
    """Activation placement: ``a`` and the letters, ``a-`` for none."""

    numeric = False

    def matches(self, token: str) -> bool:
        return _PLACE_TOKEN.fullmatch(token) is not None

    def read(self, token: str) -> str:
        return "" if token == "a-" else token[1:]

    def write(self, value: Any) -> str:
        return f"a{value or '-'}"

    def usage(self, name: str) -> str:
        return f"a<{name}>"

    def form(self) -> str:
        return "a<placement letters or ->"

    def samples(self) -> tuple[str, ...]:
        return ("a-", "az")


# ----- genes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gene:
    """One gene of a stage: its default, its check and its token."""

    name: str
    default: Any
    # check(path, value) raises GenotypeError.
    check: Callable[[str, Any], None]
    token: Token
    # The error when a stage of a block type without this gene sets it to something else than
    # the default. Fields: value, name, default, owners (the block types with it), block.
    misplaced: str = ("{value!r} is not valid: {name} applies only to {owners} blocks "
                      "(leave it at {default!r})")


# The genes of every stage, in the order they are checked (placement last, see Stage). `c` has
# no default: every stage names its channels.
SHARED: tuple[Gene, ...] = (
    Gene("c", None, in_range(1, "channels", MAX_CHANNELS), IntToken("c", "channels")),
    Gene("n", 1, in_range(1, "repeats", MAX_REPEATS), IntToken("r", "repeats")),
    Gene("s", 1, one_of(STRIDES, "stride"), IntToken("s", "stride")),
    Gene("k", 3, check_kernel, IntToken("k", "kernel")),
    Gene("act", "relu", one_of(ACTIVATIONS, "activation"),
         WordToken({a: a for a in ACTIVATIONS}, label="act")),
    Gene("residual", False, check_bool, WordToken({"skip": True, "noskip": False})),
)


def _checked_in_context(path: str, value: Any) -> None:
    """Placement letters depend on the block type, padding on the kernel: their owners check them."""


# None: the block type's reference placement.
PLACE = Gene("place", None, _checked_in_context, PlaceToken())
# Stem layers only; its token is read in every part, so no block type may claim it.
PADDING = Gene("p", None, _checked_in_context, IntToken("p", "padding"))
# The shared genes in the order of a stage's dict form and of its string; a block type puts its
# own genes among them.
SHARED_ORDER = ("c", "n", "s", "k", "act", "place", "residual")
SHARED_SPELLING = ("n", "k", "s", "c", "place", "act", "residual")
