"""Zero-cost proxies: finite scores, untouched models, and the properties each one rests on."""

import math
from dataclasses import replace

import pytest
import torch

from nas.model import zero_cost
from nas.model.builder import build_model
from search_spaces import get_space
from tests.tiny import TINY, stored_study


def small(seed=0, width=0.5):
    g = replace(get_space("mnv2").sample(seed), width=width, resolution=32)
    return g, build_model(g, 10, 1)


def batch(n=16):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


@pytest.mark.parametrize("name", zero_cost.PROXIES)
def test_each_proxy_scores_finite_and_leaves_the_model_untouched(name):
    _g, model = small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    s = zero_cost.score(name, model, x, y)
    assert math.isfinite(s)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert s == zero_cost.score(name, model, x, y)  # deterministic


def test_synflow_grows_with_width():
    g, narrow = small(width=0.5)
    wide = build_model(replace(g, width=1.0), 10, 1)
    x, y = batch()
    assert zero_cost.score("synflow", wide, x, y) > zero_cost.score("synflow", narrow, x, y)


def test_naswot_cannot_tell_identical_images_apart():
    _g, model = small()
    x, y = batch()
    same = x[:1].repeat(16, 1, 1, 1)
    assert zero_cost.score("naswot", model, same, y) == float("-inf")
    assert math.isfinite(zero_cost.score("naswot", model, x, y))


def test_grad_norm_is_the_norm_of_the_loss_gradient():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    assert zero_cost.score("grad_norm", model, x, y) == pytest.approx(expected, rel=1e-6)


def test_unknown_proxy_is_refused():
    _g, model = small()
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'flops'; valid: synflow"):
        zero_cost.score("flops", model, *batch())


def test_zero_cost_search_scores_without_training(tmp_path):
    from nas.cli.search import precheck
    from nas.search.run import run_search

    cfg = precheck([*TINY, "proxy=zero_cost", "proxy.kind=naswot", "n_trials=5"])
    study = stored_study(tmp_path, run_search(cfg, tmp_path)["study"])
    scored = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert len(scored) == 5
    for t in scored:
        assert t.value == t.user_attrs["zero_cost"] and "epochs" not in t.user_attrs
        assert t.user_attrs["mflops"] <= 28


def test_prefilter_trains_only_candidates_in_the_top_fraction(tmp_path):
    from nas.cli.search import precheck
    from nas.search.run import run_search

    cfg = precheck([*TINY, "proxy.prefilter=synflow", "proxy.prefilter_keep=0.3",
                    "proxy.prefilter_warmup=3", "n_trials=5"])
    study = stored_study(tmp_path, run_search(cfg, tmp_path)["study"])
    seen, filtered = [], 0
    for t in sorted(study.trials, key=lambda t: t.number):
        if "zero_cost" not in t.user_attrs:
            continue  # rejected for its MFLOPs before scoring
        status, z = t.user_attrs["status"], t.user_attrs["zero_cost"]
        cut = sorted(seen)[min(len(seen) - 1, int(len(seen) * 0.7))] if len(seen) >= 3 else None
        if status == "filtered":
            filtered += 1
            assert cut is not None and z < cut and "epochs" not in t.user_attrs
        else:
            assert status in ("trained", "pruned") and t.user_attrs["epochs"] == 1
            assert cut is None or z >= cut
        seen.append(z)
    assert filtered >= 1
