"""A weight-sharing supernet over a search space. Imports torch only (plus `nas.arch`).

A plain network of the space (`build_model(g)`) names its tensors by position:
`stages.3.1.expand.conv.weight` is the expansion conv of the second repeat of stage 3. The
supernet keeps one tensor under each such name, as large in every dimension as any genotype
of the space makes it: the most repeats, the largest expansion, kernel and channel count at
the largest width, every stem and head. A genotype's subnet uses the leading part of every
tensor (its first input and output channels) and the centre `k`x`k` of every kernel; its
activations, their placement and its shortcuts are the genotype's own (they hold no
weights). A gene whose choices cannot share weights (`BlockType.unshared_genes`, e.g.
Xception's dw/pw `order`) keeps one tensor per choice, and so does every gene named in
`unshared` (a training choice, `supernet.unshared`: e.g. a shortcut or an activation
placement whose choices would otherwise share one set of tensors).

`SuperNet(g_input)` runs a subnet on the shared tensors themselves (gradients reach them);
`extract(g)` returns the plain `build_model(g)` network with copies of them, so export,
ONNX, latency and `load_exported` see an ordinary network.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, fields

import torch
from torch import nn
from torch.func import functional_call

from nas.arch.blocktypes import BLOCK_TYPES
from nas.arch.genotype import (
    Genotype,
    Stage,
    head_channels,
    scale_channels,
    stage_blocks,
    stem_channels,
)
from nas.arch.space import SearchSpace
from nas.model.blocks import Network
from nas.model.builder import block_module, build_model, head_layers, stem_layers

__all__ = ["SuperNet", "space_fingerprint"]

# Genes that change no tensor's shape: activation functions and where they go hold no
# weights (lead_act only drops the first pre-activation of an Xception block).
_WEIGHTLESS_GENES = ("act", "place", "lead_act")
# Genes every tensor only grows with (more repeats, a larger kernel or expansion; not the
# channels: a projection shortcut exists only where a stage changes them).
_GROWING_GENES = ("n", "k", "t")
_SKELETONS = 64  # subnet structures kept (built on the meta device: no memory, no init)


def space_fingerprint(space: SearchSpace) -> str:
    """A hash of every choice of the space: a supernet trained on one space fits only it."""
    payload = {f.name: getattr(space, f.name) for f in fields(space) if not f.name.startswith("_")}
    payload["reference"] = str(space.reference)
    text = json.dumps(payload, sort_keys=True,
                      default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else repr(o))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _variant(space: SearchSpace, i: int, stage: Stage, unshared: tuple[str, ...] = ()) -> str:
    """Which copy of stage `i`'s tensors `stage` uses: one per choice of an unshared gene (the
    block type's own and `unshared`, where the stage offers several choices), and one per
    block type where the stage offers several."""
    genes = ["block"] if len(space.stages[i].block) > 1 else []
    genes += BLOCK_TYPES[stage.block].unshared_genes
    genes += [g for g in unshared if g not in genes and len(getattr(space.stages[i], g, ())) > 1]
    return ",".join(f"{gene}={getattr(stage, gene)}" for gene in genes)


def _key(name: str, variant: str = "") -> str:
    # Module attribute names may not hold dots.
    return name.replace(".", "-") + (f"@{variant}" if variant else "")


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, str]]:
    """(name, tensor, kind) of every parameter and buffer of `module`."""
    for mname, mod in module.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, tensor in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
            if isinstance(mod, nn.Conv2d):
                kind = "dwconv" if mod.groups > 1 else "conv"
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                kind = f"bn_{pname}"
            elif isinstance(mod, nn.Linear):
                kind = f"linear_{pname}"
            else:
                raise TypeError(f"a supernet cannot share {type(mod).__name__}.{pname}")
            yield prefix + pname, tensor, kind


def _largest_options(options: frozenset[Stage], unshared: tuple[str, ...] = ()) -> list[Stage]:
    """Of a stage's options, those whose tensors are largest: per choice of the genes that
    change which tensors exist or their layout (block, residual, m, order, ...) or keep their
    own copy (`unshared`), the one at the largest n, k and t (every tensor only grows with
    these)."""
    growing = [g for g in _GROWING_GENES if g not in unshared]
    best: dict[tuple, Stage] = {}
    for option in options:
        signature = tuple(getattr(option, f.name) for f in fields(option)
                          if f.name in unshared or f.name not in (*_WEIGHTLESS_GENES, *_GROWING_GENES))
        size = tuple(getattr(option, gene) for gene in growing)
        if signature not in best or size > tuple(getattr(best[signature], g) for g in growing):
            best[signature] = option
    return list(best.values())


Layout = dict[str, tuple[tuple[int, ...], str]]  # bank key -> (shape, kind)


def bank_layout(space: SearchSpace, num_classes: int, in_channels: int,
                unshared: tuple[str, ...] = ()) -> Layout:
    """Bank key -> (largest shape over the space, kind). Walks, per width, every stem and head
    and each stage's largest options for every channel count it can receive, on the meta
    device."""
    layout: Layout = {}

    def offer(prefix: str, module: nn.Module, variant: str = "") -> None:
        for name, tensor, kind in _tensors(module):
            key = _key(prefix + name, variant)
            shape = tuple(tensor.shape)
            if key in layout:
                old, old_kind = layout[key]
                if len(old) != len(shape) or old_kind != kind:
                    raise TypeError(f"{prefix + name}: choices of this space give it shapes {old} and "
                                    f"{shape} ({old_kind}, {kind}); they cannot share one tensor")
                shape = tuple(max(a, b) for a, b in zip(old, shape, strict=True))
            layout[key] = (shape, kind)

    features = set()
    with torch.device("meta"):
        for width in space.width:
            # Every channel count a stage can receive: a projection shortcut exists only where
            # its input and output differ, so the widest input alone would miss some tensors.
            cins = {stem_channels(stem, width)[-1] for stem in space.stem}
            for stem in space.stem:
                offer("stem.", nn.Sequential(*stem_layers(stem, width, in_channels)))
            for i in range(len(space.stages)):
                for cin in sorted(cins):
                    for option in _largest_options(space.stage_options(i, cin, width), unshared):
                        for spec in stage_blocks(i, option, cin, 1, width):
                            offer(f"stages.{i}.{spec.repeat}.", block_module(spec),
                                  _variant(space, i, option, unshared))
                cins = {scale_channels(c, width) for c in space.stages[i].c}
            for head in space.head:
                for cin in sorted(cins):
                    offer("head.", nn.Sequential(*head_layers(head, width, cin)))
                    features.add(head_channels(head, width)[-1] if head else cin)
        offer("classifier.", nn.Linear(max(features), num_classes))
    return layout


def _init(shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """The initial value `Network.reset_parameters` gives a tensor of this kind."""
    t = torch.empty(shape)
    if kind in ("conv", "dwconv"):
        nn.init.kaiming_normal_(t, mode="fan_out")
    elif kind in ("bn_weight", "bn_running_var"):
        nn.init.ones_(t)
    elif kind in ("bn_bias", "bn_running_mean", "linear_bias"):
        nn.init.zeros_(t)
    elif kind == "bn_num_batches_tracked":
        t = torch.zeros(shape, dtype=torch.long)
    elif kind == "linear_weight":
        nn.init.normal_(t, 0.0, 0.01)
    else:
        raise ValueError(f"unknown tensor kind {kind!r}")
    return t


def _part(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading `shape` of `tensor` in its channel dimensions, its centre in the others
    (a conv kernel's height and width)."""
    index = []
    for d, (want, have) in enumerate(zip(shape, tensor.shape, strict=True)):
        if want > have:
            raise ValueError(f"a subnet needs {tuple(shape)} of a shared tensor of {tuple(tensor.shape)}")
        start = 0 if d < 2 else (have - want) // 2
        index.append(slice(start, start + want))
    return tensor[tuple(index)]


class SuperNet(nn.Module):
    """Every genotype of `space` as a subnet of one set of shared tensors (one copy per choice
    of each gene in `unshared`)."""

    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int,
                 unshared: tuple[str, ...] | list[str] = ()):
        super().__init__()
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.unshared = tuple(unshared)
        self.layout = bank_layout(space, num_classes, in_channels, self.unshared)
        self.weights = nn.ParameterDict()
        self.stats = nn.Module()  # BN running statistics, shared like the weights
        for key, (shape, kind) in self.layout.items():
            value = _init(shape, kind)
            if kind.startswith("bn_running") or kind == "bn_num_batches_tracked":
                self.stats.register_buffer(key, value)
            else:
                self.weights[key] = nn.Parameter(value)
        self._skeletons: OrderedDict[str, tuple[Network, list[tuple[str, str, torch.Size]]]] = OrderedDict()

    def kind(self, key: str) -> str:
        return self.layout[key][1]

    def _skeleton(self, g: Genotype) -> tuple[Network, list[tuple[str, str, torch.Size]]]:
        """`build_model(g)` on the meta device, and for each of its tensors the bank key."""
        text = str(g)
        if text in self._skeletons:
            self._skeletons.move_to_end(text)
            return self._skeletons[text]
        if not self.space.contains(g):
            raise ValueError(f"genotype {text} is not in the supernet's space {self.space.name!r}")
        with torch.device("meta"):
            net = build_model(g, self.num_classes, self.in_channels)
        variants = [_variant(self.space, i, st, self.unshared) for i, st in enumerate(g.stages)]
        plan = []
        for name, tensor, _ in _tensors(net):
            parts = name.split(".")
            variant = variants[int(parts[1])] if parts[0] == "stages" else ""
            plan.append((name, _key(name, variant), tensor.shape))
        self._skeletons[text] = (net, plan)
        if len(self._skeletons) > _SKELETONS:
            self._skeletons.popitem(last=False)
        return net, plan

    def _bank(self, key: str) -> torch.Tensor:
        return self.weights[key] if key in self.weights else self.stats._buffers[key]

    def subnet_tensors(self, g: Genotype) -> dict[str, torch.Tensor]:
        """The subnet's tensors by their `build_model(g)` names: views of the shared ones."""
        _, plan = self._skeleton(g)
        return {name: _part(self._bank(key), shape) for name, key, shape in plan}

    def forward(self, x: torch.Tensor, g: Genotype) -> torch.Tensor:
        """Logits of subnet `g` on `x`, computed on the shared tensors (in training mode BN
        updates the shared running statistics of its channels)."""
        net, _ = self._skeleton(g)
        net.train(self.training)
        return functional_call(net, self.subnet_tensors(g), (x,), tie_weights=False)

    @torch.no_grad()
    def extract(self, g: Genotype) -> Network:
        """The plain network of `g` holding copies of its shared weights and BN statistics."""
        model = build_model(g, self.num_classes, self.in_channels)
        state = {name: t.detach().clone() for name, t in self.subnet_tensors(g).items()}
        model.load_state_dict(state)
        return model.to(next(self.parameters()).device)
