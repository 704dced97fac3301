"""Optimizer parameter groups. Imports torch only.

MobileNet's recipe puts no weight decay on depthwise filters (they have very few
parameters each, so L2 shrinks them disproportionately); like most modern recipes we
also exempt batch-norm parameters and biases.
"""

from __future__ import annotations

from torch import nn

__all__ = ["is_depthwise", "no_decay_names", "param_groups"]


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter per input channel."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1
            and module.groups == module.in_channels)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that must not be weight-decayed."""
    names = set()
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for p_name, _ in module.named_parameters(recurse=False):
            if (p_name == "bias" or is_depthwise(module)
                    or isinstance(module, nn.modules.batchnorm._NormBase)):
                names.add(prefix + p_name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: decayed weights, and depthwise/BN/bias with no decay."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
