"""Kernels: the units a network runs, as plain hashable keys (pure Python, no torch).

A kernel is what executes as one step at inference: a convolution with the batch norm
and activation that follow it, a standalone activation, a residual addition, a max-pool,
the global pool, the classifier. Blocks of different genotypes share kernels, so a latency
lookup table keyed by kernel stays small enough to measure on the user's own device, and
the predicted latency of a genotype is the sum over its kernels (`genotype_kernels`).

Keys are tuples whose first item names the kind:
    ("conv", cin, cout, k, stride, padding, groups, h_in, bn, act)   act "" = none
    ("act", name, channels, h)                                        not in place
    ("add", channels, h)
    ("maxpool", channels, h_in, stride)                               3x3, padding 1
    ("pool", channels, h)                                             global average + flatten
    ("linear", in_features, out_features)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "act",
    "add",
    "blocks_kernels",
    "conv",
    "from_text",
    "genotype_kernels",
    "head_kernels",
    "maxpool",
    "out_size",
    "stem_kernels",
    "to_text",
]

Kernel = tuple


def conv(cin: int, cout: int, k: int, s: int, h: int, *, groups: int = 1, bn: bool = True,
         act: str = "", padding: int | None = None) -> Kernel:
    return ("conv", cin, cout, k, s, k // 2 if padding is None else padding, groups, h, bn, act)


def act(name: str, c: int, h: int) -> Kernel:
    return ("act", name, c, h)


def add(c: int, h: int) -> Kernel:
    return ("add", c, h)


def maxpool(c: int, h: int, s: int) -> Kernel:
    return ("maxpool", c, h, s)


def to_text(key: Kernel) -> str:
    """One-line form of a key, as stored in lookup-table files."""
    return ":".join(str(int(x)) if isinstance(x, bool) else str(x) for x in key)


_FIELDS = {"conv": (int, int, int, int, int, int, int, bool, str), "act": (str, int, int),
           "add": (int, int), "maxpool": (int, int, int), "pool": (int, int), "linear": (int, int)}


def from_text(text: str) -> Kernel:
    """Inverse of `to_text`; a `ValueError` for anything else."""
    kind, *rest = text.split(":")
    types = _FIELDS.get(kind)
    if types is None or len(rest) != len(types):
        raise ValueError(f"not a kernel key: {text!r}")
    return (kind, *(bool(int(v)) if t is bool else t(v) for t, v in zip(types, rest, strict=True)))


def out_size(key: Kernel) -> int:
    """Output feature-map size of a spatial kernel."""
    kind = key[0]
    if kind == "conv":
        _, _, _, k, s, p, _, h, _, _ = key
        return (h + 2 * p - k) // s + 1
    if kind == "maxpool":
        return (key[2] - 1) // key[3] + 1
    return key[-1]


def genotype_kernels(genotype: Any, num_classes: int = 1000, in_channels: int = 3) -> list[Kernel]:
    """Every kernel a genotype's network runs for one image, in execution order."""
    specs = list(genotype.blocks())
    out = stem_kernels(genotype.stem, genotype.stem_channels(), genotype.resolution, in_channels)
    out += blocks_kernels(specs)
    cin = specs[-1].cout if specs else genotype.stem_channels()[-1]
    return out + head_kernels(genotype.head, genotype.head_channels(), cin, out_size(out[-1]), num_classes)


def stem_kernels(stem: Any, channels: list[int], resolution: int, in_channels: int) -> list[Kernel]:
    """The stem's convolutions (`channels`: each layer's output channels)."""
    out, h, cin = [], resolution, in_channels
    for layer, c in zip(stem, channels, strict=True):
        out.append(conv(cin, c, layer.k, layer.s, h, act=layer.act, padding=layer.p))
        h = out_size(out[-1])
        cin = c
    return out


def blocks_kernels(specs: Any) -> list[Kernel]:
    """The kernels of block instances (`nas.arch.genotype.BlockSpec`s), in order."""
    return [k for spec in specs for k in spec.gene.type.kernels(spec)]


def head_kernels(head: Any, channels: list[int], cin: int, h: int, num_classes: int) -> list[Kernel]:
    """The head's layers (`channels`: each layer's output channels), global pool and classifier,
    entered with `cin` channels at size `h`."""
    out = []
    for layer, c in zip(head, channels, strict=True):
        if layer.kind == "conv":
            out.append(conv(cin, c, layer.k, 1, h, act=layer.act))
        else:  # separable: depthwise without BN, pointwise + BN + activation
            out.append(conv(cin, cin, layer.k, 1, h, groups=cin, bn=False))
            out.append(conv(cin, c, 1, 1, h, act=layer.act))
        cin = c
    out.append(("pool", cin, h))
    out.append(("linear", cin, num_classes))
    return out
