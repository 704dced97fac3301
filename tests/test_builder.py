import pytest
import torch
from torch import nn

from nas.arch.genotype import Genotype, Stage, StemLayer, parse
from nas.model.blocks import InvertedResidual, SeparableConv, XceptionBlock
from nas.model.builder import build_model
from search_spaces import get_space, mnv1, mnv2, xception
from tests import reference_nets


def randomize(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that every layer matters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


def copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Load src's state into dst entry by entry, in registration order."""
    s, d = src.state_dict(), dst.state_dict()
    assert len(s) == len(d)
    for (ks, vs), (kd, vd) in zip(s.items(), d.items(), strict=True):
        assert vs.shape == vd.shape, (ks, kd)
    dst.load_state_dict({kd: vs for (_, vs), kd in zip(s.items(), d.keys(), strict=True)})


@pytest.mark.parametrize(
    ("genotype", "ref", "res"),
    [
        (mnv2.reference(1.0), lambda: reference_nets.MobileNetV2(1.0), 224),
        (mnv2.reference(0.5), lambda: reference_nets.MobileNetV2(0.5), 160),
        (mnv2.reference(1.4), lambda: reference_nets.MobileNetV2(1.4), 96),
        (mnv1.reference(1.0), lambda: reference_nets.MobileNetV1(1.0), 128),
        (mnv1.reference(0.5), lambda: reference_nets.MobileNetV1(0.5), 128),
        (xception.reference(), lambda: reference_nets.Xception(), 96),
    ],
    ids=["mnv2-1.0", "mnv2-0.5", "mnv2-1.4", "mnv1-1.0", "mnv1-0.5", "xception"],
)
def test_reference_genotypes_compute_what_the_papers_networks_compute(genotype, ref, res):
    ours = build_model(genotype).eval()
    randomize(ours)
    theirs = ref().eval()
    copy_in_order(ours, theirs)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == (2, 1000)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("space", ["mnv2", "xception", "mnv1"])
def test_random_genotypes_build_and_run(space):
    sp = get_space(space)
    for seed in range(3):
        g = sp.sample(seed)
        model = build_model(g, num_classes=10, in_channels=1)
        out = model(torch.randn(2, 1, 64, 64))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()


def test_build_accepts_a_genotype_string():
    model = build_model(str(mnv1.reference(0.25, 128)), num_classes=5)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.genotype == str(mnv1.reference(0.25, 128))


def test_bad_build_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(mnv2.REFERENCE, num_classes=0)


def one_stage(**kw) -> Genotype:
    return Genotype(stages=(Stage(**kw),), stem=(StemLayer(16, 3, 1),), resolution=16)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_ir_activation_placement_is_honoured():
    for place, acts in (("ed", 2), ("d", 1), ("edp", 3), ("", 0), ("p", 1)):
        m = build_model(one_stage(block="ir", c=16, t=6, place=place, act="hswish"))
        block = m.stages[0][0]
        assert isinstance(block, InvertedResidual)
        assert count(block, nn.Hardswish) == acts
        assert isinstance(block.project.act, nn.Hardswish) == ("p" in place)


def test_ir_without_expansion_has_no_expand_conv():
    block = build_model(one_stage(block="ir", c=16, t=1)).stages[0][0]
    assert block.expand is None and count(block, nn.Conv2d) == 2


def test_residual_switch_changes_the_function():
    on = build_model(one_stage(block="ir", c=16, t=3, residual=True)).eval()
    off = build_model(one_stage(block="ir", c=16, t=3, residual=False)).eval()
    off.load_state_dict(on.state_dict())
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(on(x), off(x))
    block = on.stages[0][0]
    y = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(y), y + block.project(block.dw(block.expand(y))))


def test_residual_only_on_repeats_whose_shapes_allow_it():
    m = build_model(one_stage(block="ir", c=24, n=3, s=2, t=6, residual=True))
    assert [b.shortcut for b in m.stages[0]] == [False, True, True]


def test_xception_order_puts_depthwise_on_the_right_side():
    dp = build_model(one_stage(block="xc", c=32, m=1, order="dp", place="i", residual=True))
    pd = build_model(one_stage(block="xc", c=32, m=1, order="pd", place="i", residual=True))
    assert dp.stages[0][0].convs[0].dw.in_channels == 16
    assert pd.stages[0][0].convs[0].dw.in_channels == 32


def test_xception_placement_and_lead():
    g = one_stage(block="xc", c=32, m=3, place="imo", lead_act=False, n=2, residual=True)
    blocks = build_model(g).stages[0]
    first, second = blocks[0].convs, blocks[1].convs
    assert isinstance(first[0].pre, nn.Identity)  # no leading pre-activation
    assert all(isinstance(u.pre, nn.ReLU) for u in list(first[1:]) + list(second))
    assert all(isinstance(u.mid, nn.ReLU) and isinstance(u.post, nn.ReLU) for u in first)


def test_xception_shortcut_projects_only_when_shapes_change():
    g = one_stage(block="xc", c=32, m=2, n=2, s=2, residual=True)
    first, second = build_model(g).stages[0]
    assert isinstance(first.skip, nn.Conv2d) and first.skip.stride == (2, 2)
    assert second.skip is None and second.shortcut
    assert isinstance(first.pool, nn.MaxPool2d) and second.pool is None
    nores = build_model(one_stage(block="xc", c=32, m=2, s=2, residual=False)).stages[0][0]
    assert nores.skip is None and not nores.shortcut


def test_xception_grow_last_keeps_channels_until_the_last_conv():
    g = one_stage(block="xc", c=48, m=3, grow="last")
    convs = build_model(g).stages[0][0].convs
    assert [u.pw.out_channels for u in convs] == [16, 16, 48]


def test_separable_head_layer():
    g = parse("res64_w1.0_drop0.0:stem_c16_k3_s2_p1_relu:ds_r1_k3_s1_c32_adp_relu_noskip:"
              "head_sep_c64_k3_silu")
    head = build_model(g).head[0]
    assert isinstance(head, SeparableConv) and isinstance(head.post, nn.SiLU)


def test_xception_block_module_takes_explicit_arguments():
    block = XceptionBlock(8, 16, 3, 2, 2, "dp", "first", "relu", "i", True)
    assert block(torch.randn(1, 8, 9, 9)).shape == (1, 16, 5, 5)
