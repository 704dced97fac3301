"""Zero-cost proxies: score an untrained network from one mini-batch, no training.

- `grad_norm`: the L2 norm of the loss gradient over all weights (Abdelfattah et al., 2021).
- `synflow`: synaptic flow (Tanaka et al., 2020), data-free: with every weight replaced by
  its absolute value and an all-ones input, the sum over weights of |theta * dR/dtheta|
  where R is the sum of the outputs. Computed in float64 so deep networks do not overflow.
- `naswot`: "NAS without training" (Mellor et al., 2021): the log-determinant of the kernel
  of binary activation codes of the mini-batch, K[i, j] = units where images i and j agree
  on whether the unit is active.

Each takes a freshly built model and returns a float (higher is better); the model is
left as it was given.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["PROXIES", "grad_norm", "naswot", "score", "synflow"]

PROXIES = ("synflow", "grad_norm", "naswot")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model = copy.deepcopy(model).train()  # BN from the batch, as in the first training step
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()  # deterministic: the score of a network, not of a dropout mask
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    total = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    return total ** 0.5


def synflow(model: nn.Module, shape: tuple[int, ...]) -> float:
    # BN in eval mode at initialization (mean 0, variance 1) keeps the flow data-free.
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    device = next(model.parameters()).device  # wherever the model is (CPU or an accelerator)
    torch.sum(model(torch.ones(1, *shape[1:], dtype=torch.float64, device=device))).backward()
    score = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    # Scores span hundreds of orders of magnitude between networks: rank by their log.
    return float(torch.log(torch.tensor(score, dtype=torch.float64) + 1e-300))


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    model = copy.deepcopy(model).eval()
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        codes = (out.detach().reshape(n, -1) > 0).double()
        k.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


def score(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Zero-cost score `name` of `model` on the mini-batch (x, y)."""
    x, y = x.to(next(model.parameters()).device), y.to(next(model.parameters()).device)
    if name == "grad_norm":
        return grad_norm(model, x, y)
    if name == "synflow":
        return synflow(model, tuple(x.shape))
    if name == "naswot":
        return naswot(model, x)
    raise ValueError(f"unknown zero-cost proxy {name!r}; valid: {', '.join(PROXIES)}")
