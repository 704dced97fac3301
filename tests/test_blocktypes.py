"""The block-type registry is the only place a block type lives: a throwaway fourth type,
registered here and removed afterwards, works everywhere without a line elsewhere."""

import contextlib
import dataclasses

import pytest
import torch
from torch import nn

from nas.arch import kernels as K
from nas.arch.blocktypes import (
    BLOCK_TYPES,
    EXPANSION,
    BlockType,
    block_out_size,
    register,
    stage_genes,
    unregister,
)
from nas.arch.cost import cost
from nas.arch.genes import Gene, GenotypeError, IntToken, WordToken, in_range, one_of
from nas.arch.genotype import Genotype, Stage, StemLayer, parse
from nas.arch.space import SearchSpace, StageChoices
from search_spaces import mnv2

BUILT_IN = ("block", "c", "n", "s", "k", "t", "act", "place", "residual", "m", "order", "grow",
            "lead_act")


class ToyBlock(nn.Module):
    """`w` parallel strided 1x1 convs (no bias), combined by sum or max."""

    def __init__(self, cin: int, cout: int, stride: int, w: int, mix: str):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 1, stride, bias=False) for _ in range(w))
        self.mix = mix

    @classmethod
    def from_spec(cls, spec):
        return cls(spec.cin, spec.cout, spec.stride, spec.gene.w, spec.gene.mix)

    def forward(self, x):
        ys = torch.stack([conv(x) for conv in self.convs])
        return ys.sum(0) if self.mix == "sum" else ys.amax(0)


def toy_cost(stage, cin, cout, h, s, shortcut):
    ho = block_out_size(h, s)
    return stage.w * cin * cout, stage.w * cin * cout * ho * ho, ho


def toy_kernels(spec):
    return [K.conv(spec.cin, spec.cout, 1, spec.stride, spec.h_in, bn=False, padding=0)] * spec.gene.w


def toy_type(**changes) -> BlockType:
    entry = dict(
        name="toy",
        title="parallel 1x1 convs",
        placements={"o": "after the convs"},
        reference_placement="",
        projection_shortcut=False,
        cost=toy_cost,
        kernels=toy_kernels,
        module=f"{__name__}:ToyBlock",
        genes=(Gene("w", 1, in_range(1, "parallel convs w", 8), IntToken("w", "parallel convs")),
               Gene("mix", "sum", one_of(("sum", "max"), "mix"), WordToken({"sum": "sum", "max": "max"}))),
    )
    return BlockType(**{**entry, **changes})


@contextlib.contextmanager
def registered(bt: BlockType):
    register(bt)
    try:
        yield bt
    finally:
        unregister(bt.name)


@pytest.fixture
def toy():
    with registered(toy_type()) as bt:
        yield bt


def genotype(*stages: Stage) -> Genotype:
    return Genotype(stages=stages, stem=(StemLayer(8, 3, 2),), resolution=32)


def test_a_stage_of_the_new_type_has_exactly_its_genes_as_fields(toy):
    stage = Stage("toy", 16, w=3, mix="max")
    assert [f.name for f in dataclasses.fields(stage)] == [
        "block", "c", "n", "s", "k", "act", "place", "residual", "w", "mix"]
    assert (stage.w, stage.mix, stage.t) == (3, "max", 1)  # t: another type's gene, at its default
    assert Stage("ir", 16).w == 1 and stage_genes() == (*BUILT_IN, "w", "mix")


def test_the_new_gene_is_validated_and_refused_on_other_types(toy):
    with pytest.raises(GenotypeError, match=r"^w: 9 is not valid: parallel convs w must be an integer "
                                            r"in \[1, 8\]$"):
        Stage("toy", 16, w=9)
    with pytest.raises(GenotypeError, match=r"^w: 2 is not valid: w applies only to toy blocks "
                                            r"\(leave it at 1\)$"):
        Stage("ir", 16, w=2)
    with pytest.raises(GenotypeError, match=r"^t: 6 is not valid: expansion applies only to ir blocks, "
                                            r"toy blocks need t = 1$"):
        Stage("toy", 16, t=6)
    with pytest.raises(GenotypeError, match="not a valid activation position for toy blocks"):
        Stage("toy", 16, place="e")


def test_the_new_type_prints_parses_back_and_round_trips_through_dict_and_yaml(toy):
    g = genotype(Stage("toy", 16, s=2, w=3, mix="max", place="o"), Stage("ir", 24, t=6))
    text = str(g)
    # Without a spelling of its own, a type's genes follow the shared ones.
    assert ":toy_r1_k3_s2_c16_ao_relu_noskip_w3_max:ir_r1_k3_s1_e6_c24_aed_relu_noskip" in text
    assert parse(text) == g and str(parse(text)) == text
    shuffled = text.replace("toy_r1_k3_s2_c16_ao_relu_noskip_w3_max", "toy_max_w3_noskip_relu_ao_c16_s2")
    assert parse(shuffled) == g
    assert g.to_dict()["stages"][0] == {"block": "toy", "c": 16, "n": 1, "s": 2, "k": 3, "act": "relu",
                                        "place": "o", "residual": False, "w": 3, "mix": "max"}
    assert Genotype.from_dict(g.to_dict()) == g
    assert Genotype.from_yaml(g.to_yaml()) == g


def test_the_parser_knows_the_new_tokens_and_forms(toy):
    with pytest.raises(GenotypeError, match="token 'w2' sets 'w', which this part does not take"):
        parse("res32_w1.0_drop0.0:ir_c8_w2")
    with pytest.raises(GenotypeError) as info:
        parse("res32_w1.0_drop0.0:zz_c8")
    assert "toy_r<n>_k<k>_s<s>_c<c>_a<place>_<act>_<skip|noskip>_w<w>_<sum|max>" in str(info.value)
    with pytest.raises(GenotypeError) as info:
        parse("res32_w1.0_drop0.0:toy_c8_wat")
    assert "m<convs> w<parallel convs> p<padding>" in str(info.value)
    assert "lead|nolead sum|max and activations" in str(info.value)


def test_the_new_type_is_costed_and_built_from_its_entry(toy):
    g = genotype(Stage("toy", 16, s=2, w=3), Stage("toy", 16, w=2, mix="max"))
    model = build(g)
    params = sum(p.numel() for p in model.parameters())
    assert cost(g, 10, 1).params == params
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert K.genotype_kernels(g, 10)[1:6] == [K.conv(8, 16, 1, 2, 16, bn=False, padding=0)] * 3 + \
        [K.conv(16, 16, 1, 1, 8, bn=False, padding=0)] * 2


def build(g):
    from nas.model.builder import build_model

    return build_model(g, 10, 1)


def test_a_space_chooses_the_new_gene_only_for_the_new_type(toy):
    choices = StageChoices(block=("toy", "ir"), c=(16,), w=(1, 2), mix=("sum", "max"), t=(1, 6))
    space = SearchSpace(name="toy", description="test", reference=genotype(Stage("toy", 16)),
                        stages=(choices,), stem=((StemLayer(8, 3, 2),),), head=((),), resolution=(32,))
    assert space.size() == 4 + 2  # toy: w x mix; ir: t
    asked = []
    space.decode(lambda name, options: asked.append(name) or options[0])
    assert asked == ["s0_block", "s0_w", "s0_mix"]
    assert {str(space.sample(seed).stages[0]) for seed in range(60)} == {
        "toy_r1_k3_s1_c16_a-_relu_noskip_w1_sum", "toy_r1_k3_s1_c16_a-_relu_noskip_w1_max",
        "toy_r1_k3_s1_c16_a-_relu_noskip_w2_sum", "toy_r1_k3_s1_c16_a-_relu_noskip_w2_max",
        "ir_r1_k3_s1_e1_c16_a-_relu_noskip", "ir_r1_k3_s1_e6_c16_a-_relu_noskip"}


def test_unregistering_leaves_the_built_in_types_as_they_were():
    before = (str(mnv2.REFERENCE), mnv2.REFERENCE.to_yaml(), cost(mnv2.REFERENCE))
    with registered(toy_type()):
        assert parse(str(mnv2.REFERENCE)) == mnv2.REFERENCE
    assert "toy" not in BLOCK_TYPES and stage_genes() == BUILT_IN
    assert not hasattr(Stage("ir", 16), "w")
    assert [f.name for f in dataclasses.fields(StageChoices(block=("ir",), c=(8,)))] == list(BUILT_IN)
    assert (str(mnv2.REFERENCE), mnv2.REFERENCE.to_yaml(), cost(mnv2.REFERENCE)) == before
    with pytest.raises(GenotypeError, match="valid: ir, xc, ds"):
        Stage("toy", 16)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"genes": (Gene("pool", "avg", one_of(("avg",), "pool"), WordToken({"avg": "avg"})),)},
         "reads as the token of 'place'"),
        ({"genes": (Gene("w", 1, in_range(1, "w"), IntToken("r", "repeats")),)}, "reads as the token of 'n'"),
        ({"genes": (Gene("t", 2, in_range(1, "t"), IntToken("e", "expansion")),)},
         "differs from the registered"),
        ({"genes": (Gene("w", 1, in_range(1, "w"), IntToken("w", "w")),
                    Gene("v", 1, in_range(1, "v"), IntToken("w", "v")))}, "reads as the token of 'w'"),
        ({"name": "ir"}, "already registered"),
        ({"name": "stem"}, "not stem or head"),
        ({"spelling": ("n", "k", "s", "c")}, "must hold each of"),
        ({"place_words": {"dw": "o"}}, "placement word 'dw' already means 'd'"),
    ],
)
def test_the_registry_refuses_an_entry_that_would_be_ambiguous(changes, words):
    with pytest.raises(ValueError, match=words):
        register(toy_type(**changes))
    assert "toy" not in BLOCK_TYPES and stage_genes() == BUILT_IN


def test_a_new_type_may_share_a_built_in_gene():
    with registered(toy_type(genes=(EXPANSION,))):
        stage = Stage("toy", 16, t=4)
        assert str(stage) == "toy_r1_k3_s1_c16_a-_relu_noskip_e4"
        assert parse(str(genotype(stage))).stages[0] == stage
        with pytest.raises(GenotypeError, match="expansion applies only to ir, toy blocks, ds blocks"):
            Stage("ds", 16, t=4)


def test_a_stage_pickles_copies_and_replaces_like_a_plain_frozen_dataclass():
    import copy
    import pickle

    stage = mnv2.REFERENCE.stages[3]
    assert pickle.loads(pickle.dumps(stage)) == stage
    assert copy.deepcopy(stage) == stage and copy.copy(stage) == stage
    assert dataclasses.replace(stage, t=3) == Stage("ir", 64, n=4, s=2, t=3, act="relu6", residual=True)
    assert str(dataclasses.replace(stage, block="ds", t=1, place="dp")) == "ds_r4_k3_s2_c64_adp_relu6_skip"
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.k = 5
