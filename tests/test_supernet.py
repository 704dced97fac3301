"""The supernet: every genotype of a space is a slice of one set of shared tensors."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from nas.arch.genotype import scale_channels, stage_blocks, stem_channels
from nas.model.builder import block_module
from nas.model.supernet import SuperNet, _key, _tensors, _variant, bank_layout
from search_spaces import NAMES, get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=NAMES)
def supernet(request) -> SuperNet:
    """A supernet of each space whose every tensor holds random values (BN statistics
    included), so that any mix-up of channels or kernel taps changes the logits."""
    torch.manual_seed(0)
    net = SuperNet(get_space(request.param), num_classes=10, in_channels=1)
    with torch.no_grad():
        for key, tensor in [*net.weights.items(), *net.stats._buffers.items()]:
            kind = net.kind(key)
            if kind == "bn_running_var":
                tensor.uniform_(0.5, 2.0)
            elif kind == "bn_num_batches_tracked":
                tensor.fill_(3)
            elif kind in ("bn_weight",):
                tensor.uniform_(0.5, 1.5)
            else:
                tensor.normal_(0.0, 0.3 if kind != "linear_weight" else 0.1)
    return net.eval()


def test_sliced_forward_equals_the_extracted_network(supernet):
    space = supernet.space
    rng = random.Random(1)
    genotypes = [space.extreme(True), space.extreme(False)] + [space.sample(rng) for _ in range(8)]
    for g in genotypes:
        x = torch.randn(2, 1, 24, 24)
        with torch.no_grad():
            sliced = supernet(x, g)
            plain = supernet.extract(g).eval()(x)
        assert plain.abs().max() > 1e-3, "logits this small would hide a mismatch"
        torch.testing.assert_close(sliced, plain, rtol=1e-4, atol=1e-5, msg=str(g))


def test_subnets_share_their_leading_channels_and_kernel_centres(supernet):
    """Genotypes differing in the kernel size (or the width) of a stage read the centre (or
    the leading channels) of the same tensor."""
    space = supernet.space
    small = space.extreme(False)
    first = small.stages[0]
    big_k = replace(small, stages=(replace(first, k=max(space.stages[0].k)), *small.stages[1:]))
    name = next(n for n, t in supernet.extract(small).state_dict().items()
                if n.startswith("stages.0.0.") and t.dim() == 4 and t.shape[-1] == first.k)
    wb = supernet.extract(small).state_dict()[name]
    wa = supernet.extract(big_k).state_dict()[name]
    off = (wa.shape[-1] - wb.shape[-1]) // 2
    assert wa.shape[-1] > wb.shape[-1]
    assert torch.equal(wa[:, :, off:off + wb.shape[-1], off:off + wb.shape[-1]], wb)
    wide_state = supernet.extract(replace(small, width=max(space.width))).state_dict()
    narrow_state = supernet.extract(small).state_dict()
    stem = [(n, t) for n, t in narrow_state.items() if n.startswith("stem.") and t.dim()]
    assert stem
    for n, t in stem:
        assert wide_state[n].shape[0] > t.shape[0]
        assert torch.equal(wide_state[n][tuple(slice(0, d) for d in t.shape)], t)


def test_gradients_reach_only_the_subnets_slice():
    space = get_space("mnv2")
    net = SuperNet(space, 10, 1).train()
    g = space.extreme(False)
    loss = net(torch.randn(4, 1, 16, 16), g).sum()
    loss.backward()
    # The smallest subnet has 1 repeat at k3, t1: the first stage's depthwise kernel of the
    # largest (7x7) gets gradient in its centre 3x3 only, and the last repeats get none.
    dw = net.weights[_key("stages.1.0.dw.conv.weight")]
    assert dw.grad is not None
    centre = dw.grad[:, :, 2:5, 2:5]
    assert centre.abs().sum() > 0
    outside = dw.grad.clone()
    outside[:, :, 2:5, 2:5] = 0
    assert outside.abs().sum() == 0
    unused = net.weights[_key("stages.3.4.dw.conv.weight")]
    assert unused.grad is None or unused.grad.abs().sum() == 0


def test_training_updates_the_shared_batch_norm_statistics_of_the_subnets_channels():
    space = get_space("mnv1")
    net = SuperNet(space, 10, 1).train()
    g = space.extreme(False)
    key = _key("stem.0.bn.running_mean")
    before = net.stats._buffers[key].clone()
    net(torch.randn(8, 1, 16, 16) + 3.0, g)
    after = net.stats._buffers[key]
    c = stem_channels(g.stem, g.width)[-1]
    assert not torch.equal(after[:c], before[:c])
    assert torch.equal(after[c:], before[c:])


def test_an_unshared_gene_gets_a_tensor_per_choice():
    """Xception's dw/pw order: each order has its own copy of a stage's tensors."""
    space = get_space("xception")
    layout = bank_layout(space, 10, 1)
    keys = [k for k in layout if k.startswith("stages-0-0-convs-0-")]
    assert any(k.endswith("@order=dp") for k in keys) and any(k.endswith("@order=pd") for k in keys)
    assert all("@order=" in k for k in keys)


@pytest.mark.parametrize("name", NAMES)
def test_genes_named_unshared_get_a_copy_per_choice_and_slice_exactly(name):
    """`unshared` (supernet.unshared): a stage's genes named there read their own copy of its
    tensors per choice (weightless ones too), the others still share; the sliced forward still
    equals the extracted network."""
    space = get_space(name)
    torch.manual_seed(0)
    net = SuperNet(space, 10, 1, unshared=("residual", "place", "t"))
    with torch.no_grad():
        for key, tensor in [*net.weights.items(), *net.stats._buffers.items()]:
            if net.kind(key) == "bn_running_var":
                tensor.uniform_(0.5, 2.0)
            elif net.kind(key) != "bn_num_batches_tracked":
                tensor.normal_(0.0, 0.3)
    net.eval()
    rng = random.Random(4)
    for g in [space.extreme(True), space.extreme(False)] + [space.sample(rng) for _ in range(5)]:
        x = torch.randn(2, 1, 24, 24)
        with torch.no_grad():
            torch.testing.assert_close(net(x, g), net.extract(g).eval()(x), rtol=1e-4, atol=1e-5, msg=str(g))
    shared = bank_layout(space, 10, 1)
    assert len(net.layout) > len(shared)
    offered = [gene for gene in ("residual", "place", "t") if len(getattr(space.stages[1], gene, ())) > 1]
    keys = [k for k in net.layout if k.startswith("stages-1-")]
    assert offered and all(all(f"{gene}=" in k for gene in offered) for k in keys)
    # the kernel size is still shared: two subnets differing only in it read one tensor
    g = space.extreme(False)
    first = g.stages[1]
    big_k = replace(g, stages=(g.stages[0], replace(first, k=max(space.stages[1].k)), *g.stages[2:]))
    assert {k for _, k, _ in net._skeleton(g)[1]} <= set(net.layout)
    assert [k for _, k, _ in net._skeleton(g)[1]] == [k for _, k, _ in net._skeleton(big_k)[1]]


@pytest.mark.parametrize("name", ["mnv1", "xception"])
def test_layout_covers_every_stage_option_of_the_space(name):
    """The bank's shapes equal the largest over *every* option of every stage after every
    channel count (brute force but for the activation genes, which hold no weights), not only
    the largest options the layout walks. Two widths keep it quick."""
    space = replace(get_space(name), width=(0.5, 1.0))
    layout = bank_layout(space, 10, 1)
    brute: dict[str, tuple[int, ...]] = {}
    seen: set = set()
    with torch.device("meta"):
        for width in space.width:
            cins = {stem_channels(stem, width)[-1] for stem in space.stem}
            for i in range(len(space.stages)):
                outs = set()
                for cin in cins:
                    for option in space.stage_options(i, cin, width):
                        outs.add(scale_channels(option.c, width))
                        weighty = (cin, width, replace(option, act=option.act, place=space.stages[i].place[0],
                                                       lead_act=True))
                        if weighty in seen:
                            continue
                        seen.add(weighty)
                        for spec in stage_blocks(i, option, cin, 1, width):
                            for tname, tensor, _ in _tensors(block_module(spec)):
                                key = _key(f"stages.{i}.{spec.repeat}.{tname}", _variant(space, i, option))
                                shape = tuple(tensor.shape)
                                old = brute.get(key, shape)
                                brute[key] = tuple(max(a, b) for a, b in zip(old, shape, strict=True))
                cins = outs
    staged = {k: shape for k, (shape, _) in layout.items() if k.startswith("stages-")}
    assert staged == brute


def test_a_genotype_outside_the_space_is_refused():
    space = get_space("mnv1")
    net = SuperNet(space, 10, 1)
    other = get_space("mnv2").sample(0)
    with pytest.raises(ValueError, match="not in the supernet's space"):
        net(torch.randn(1, 1, 16, 16), other)


def test_extremes_bound_every_sample():
    from nas.arch.cost import cost

    for name in NAMES:
        space = get_space(name)
        hi = cost(space.extreme(True)).macs
        lo = cost(space.extreme(False)).macs
        samples = [cost(space.sample(s)).macs for s in range(30)]
        assert lo <= min(samples) and max(samples) <= hi
        assert space.contains(space.extreme(True)) and space.contains(space.extreme(False))


def test_extracted_network_is_independent_of_the_supernet():
    space = get_space("mnv1")
    net = SuperNet(space, 10, 1)
    g = space.sample(3)
    model = net.extract(g)
    kept = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(t, kept[n]) for n, t in model.state_dict().items())
    fresh = net.extract(g).state_dict()
    assert not torch.equal(fresh["classifier.weight"], kept["classifier.weight"])
