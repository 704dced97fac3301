"""The kernels of a built model, read off its torch.fx graph: an independent check of the
analytic decomposition in `nas.arch.kernels` / `nas.arch.blocktypes`."""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

ACT_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish", nn.SiLU: "silu"}


def traced_kernels(model: nn.Module, in_channels: int, resolution: int) -> list[tuple]:
    model = model.eval()
    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(torch.zeros(1, in_channels, resolution, resolution))
    mods = dict(gm.named_modules())
    out, used = [], set()

    def shape(node: fx.Node) -> torch.Size:
        return node.meta["tensor_meta"].shape

    def only_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def module_of(node: fx.Node | None) -> nn.Module | None:
        return mods[node.target] if node is not None and node.op == "call_module" else None

    for node in gm.graph.nodes:
        if node in used:
            continue
        mod = module_of(node)
        if isinstance(mod, nn.Conv2d):
            tail, bn, act = node, False, ""
            nxt = only_user(tail)
            if isinstance(module_of(nxt), nn.BatchNorm2d):
                bn, tail = True, nxt
                used.add(nxt)
                nxt = only_user(tail)
            m = module_of(nxt)
            if type(m) in ACT_NAMES and m.inplace:
                act = ACT_NAMES[type(m)]
                used.add(nxt)
            h = shape(node.args[0])[-1]
            out.append(("conv", mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0],
                        mod.padding[0], mod.groups, h, bn, act))
        elif type(mod) in ACT_NAMES:
            s = shape(node)
            out.append(("act", ACT_NAMES[type(mod)], s[1], s[-1]))
        elif isinstance(mod, nn.MaxPool2d):
            s = shape(node.args[0])
            out.append(("maxpool", s[1], s[-1], mod.stride))
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            s = shape(node.args[0])
            out.append(("pool", s[1], s[-1]))
        elif isinstance(mod, nn.Linear):
            out.append(("linear", mod.in_features, mod.out_features))
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            s = shape(node)
            out.append(("add", s[1], s[-1]))
        elif isinstance(mod, nn.BatchNorm2d):
            raise AssertionError(f"batch norm {node.name} not after a convolution")
    return out
