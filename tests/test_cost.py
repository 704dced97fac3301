import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch.cost import cost
from nas.model.builder import build_model
from search_spaces import get_space, mnv1, mnv2, xception

# DESIGN.md section 3: 1000 classes.
TABLE = [
    ("mnv2 1.0", mnv2.reference(1.0), 3_504_872, 300_774_272),
    ("mnv2 0.5", mnv2.reference(0.5), 1_968_680, 97_131_840),
    ("mnv2 1.4", mnv2.reference(1.4), 6_108_776, 582_195_824),
    ("mnv1 1.0", mnv1.reference(1.0), 4_231_976, 568_740_352),
    ("xception", xception.reference(), 22_855_952, 8_357_403_496),
]


def counted(genotype, num_classes=1000, in_channels=3):
    """Params and MACs of the built model, counted by torch (on the meta device: no compute)."""
    with torch.device("meta"):
        model = build_model(genotype, num_classes, in_channels).eval()
    x = torch.empty(1, in_channels, genotype.resolution, genotype.resolution, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return sum(p.numel() for p in model.parameters()), flops // 2


@pytest.mark.parametrize(("name", "g", "params", "macs"), TABLE, ids=[t[0] for t in TABLE])
def test_reference_networks_match_the_papers_exactly(name, g, params, macs):
    c = cost(g)
    assert (c.params, c.macs) == (params, macs)
    assert counted(g) == (params, macs)


@pytest.mark.parametrize("space", ["mnv2", "xception", "mnv1"])
def test_analytic_cost_equals_counted_cost_for_25_random_genotypes(space):
    sp = get_space(space)
    mismatches = []
    for seed in range(25):
        g = sp.sample(seed)
        c = cost(g)
        if (c.params, c.macs) != counted(g):
            mismatches.append(str(g))
    assert mismatches == []


def test_cost_follows_classes_and_input_channels():
    g = mnv2.reference(0.5, 96)
    for classes, cin in ((10, 1), (100, 3), (7, 4)):
        c = cost(g, classes, cin)
        assert (c.params, c.macs) == counted(g, classes, cin)


def test_breakdown_parts_sum_to_the_total():
    for g in (mnv2.REFERENCE, mnv1.REFERENCE, xception.REFERENCE):
        c = cost(g, breakdown=True)
        assert sum(p.params for p in c.parts) == c.params
        assert sum(p.macs for p in c.parts) == c.macs
        assert c.parts[0].name == "stem" and c.parts[-1].name == "classifier"
        assert len([p for p in c.parts if p.name.startswith("stage")]) == len(g.stages)


def test_breakdown_reports_output_shapes():
    c = cost(mnv2.REFERENCE, breakdown=True)
    shapes = [(p.out_channels, p.out_size) for p in c.parts]
    assert shapes == [(32, 112), (16, 112), (24, 56), (32, 28), (64, 14), (96, 14), (160, 7),
                      (320, 7), (1280, 7), (1000, 1)]


def test_mflops_unit_is_millions_of_macs():
    c = cost(mnv2.REFERENCE)
    assert c.mflops == pytest.approx(300.774272)
    assert c.params_m == pytest.approx(3.504872)
