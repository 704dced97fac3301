import itertools

import pytest

from nas.arch.cost import cost
from nas.arch.genotype import HeadLayer, StemLayer
from nas.arch.space import SearchSpace, StageChoices
from search_spaces import NAMES, UnknownSpaceError, get_space, mnv1, mnv2


def tiny_space() -> SearchSpace:
    ref = mnv2.reference(1.0, 32)
    stages = (
        StageChoices(block=("ir",), c=(16, 24), n=(1, 2), s=(1,), k=(3, 5), t=(1, 6),
                     act=("relu6",), place=("ed", "d"), residual=(True, False)),
        StageChoices(block=("ir", "ds"), c=(24,), n=(1,), s=(2,), k=(3,), t=(1, 3),
                     act=("relu6",), place=("d",), residual=(False,)),
    )
    from nas.arch.genotype import Genotype, Stage

    reference = Genotype(stages=(Stage("ir", 16, t=1, act="relu6", place="d"),
                                 Stage("ir", 24, s=2, t=1, act="relu6", place="d")),
                         stem=ref.stem, head=(HeadLayer(64, act="relu6"),), resolution=32)
    return SearchSpace(name="tiny", description="test", reference=reference, stages=stages,
                       stem=((StemLayer(16, 3, 2, 1, "relu6"),), (StemLayer(24, 3, 2, 1, "relu6"),)),
                       head=((HeadLayer(64, act="relu6"),),), width=(1.0, 0.5),
                       resolution=(32, 48))


def brute_force(space: SearchSpace):
    """Every genotype of the space, by exhaustive enumeration of all gene choices."""
    names = []
    options = []
    probe = {}

    def record(name, opts):
        if name not in probe:
            probe[name] = opts
            names.append(name)
            options.append(opts)
        return opts[0]

    space.decode(record)
    # Conditional genes (t only for ir) make the probe incomplete; enumerate by rerunning.
    seen = set()
    frontier = [{}]
    while frontier:
        fixed = frontier.pop()

        def choose(name, opts, fixed=fixed):
            if name in fixed:
                return fixed[name]
            raise LookupError(name, opts)

        try:
            seen.add(space.decode(choose))
        except LookupError as e:
            name, opts = e.args
            for o in opts:
                frontier.append({**fixed, name: o})
    return seen


def test_size_and_cost_range_are_exact_on_a_tiny_space():
    sp = tiny_space()
    everything = brute_force(sp)
    assert sp.size() == len(everything)
    macs = [cost(g).macs for g in everything]
    params = [cost(g).params for g in everything]
    rng = sp.cost_range()
    assert rng["macs"] == (min(macs), max(macs))
    assert rng["params"] == (min(params), max(params))
    assert all(sp.contains(g) for g in everything)


def test_the_fastest_latency_bound_is_the_same_fold_and_exact_on_a_tiny_space():
    # The latency predictor's lower bound runs `SearchSpace.fold` with kernel prices and min:
    # against every genotype of the space, it must find the cheapest and visit every kernel.
    import hashlib

    from nas.arch.kernels import genotype_kernels, to_text
    from nas.hardware.latency import cheapest

    def price(kernels):
        return sum(int(hashlib.sha256(to_text(k).encode()).hexdigest()[:6], 16) for k in kernels)

    sp = tiny_space()
    everything = brute_force(sp)
    assert cheapest(sp, 10, 3, price) == min(price(genotype_kernels(g, 10, 3)) for g in everything)
    seen = set()
    cheapest(sp, 10, 3, lambda kernels: seen.update(kernels) or 0)
    assert seen == {k for g in everything for k in genotype_kernels(g, 10, 3)}


def test_size_counts_distinct_genotypes_only():
    sp = tiny_space()
    # 2 widths x 2 resolutions x 2 stems, then stages: raw product overcounts because a
    # shortcut that is impossible is switched off and t=1 drops the expansion activation.
    raw = 2 * 2 * 2 * (2 * 2 * 2 * 2 * 2 * 2) * (2 + 1)
    assert sp.size() < raw


@pytest.mark.parametrize("name", NAMES)
def test_reference_is_in_its_space_and_inside_the_cost_range(name):
    sp = get_space(name)
    assert sp.contains(sp.reference)
    rng = sp.cost_range()
    c = cost(sp.reference)
    assert rng["macs"][0] < c.macs < rng["macs"][1]
    assert rng["params"][0] < c.params < rng["params"][1]


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible_and_stays_in_the_space(name):
    sp = get_space(name)
    a = [sp.sample(s) for s in range(20)]
    b = [sp.sample(s) for s in range(20)]
    assert a == b
    assert len(set(a)) == 20
    assert all(sp.contains(g) for g in a[:5])
    rng = sp.cost_range()
    assert all(rng["macs"][0] <= cost(g).macs <= rng["macs"][1] for g in a)


def test_spaces_offer_the_documented_choices():
    sp = get_space("mnv2")
    stage = sp.stages[1]  # reference (6, 24, 2, 2)
    assert stage.t == (1, 3, 6) and stage.k == (3, 5, 7)
    assert stage.c == (16, 24, 32) and stage.n == (1, 2, 3)
    assert set(stage.residual) == {True, False} and "ed" in stage.place


def test_space_minimum_allows_the_documented_budgets():
    # README's examples: mnv2 at 300 MFLOPs, xception at 600 MFLOPs.
    assert get_space("mnv2").cost_range(10)["macs"][0] < 300e6
    assert get_space("xception").cost_range(10)["macs"][0] < 600e6


def test_decode_only_asks_for_genes_with_a_choice():
    asked = []
    mnv1.SPACE.decode(lambda name, opts: asked.append(name) or opts[0])
    assert "dropout" not in asked and "s0_s" not in asked and "width" in asked
    assert all(not n.endswith("_t") for n in asked)  # no expansion in ds blocks


def test_unknown_space_lists_the_valid_ones():
    with pytest.raises(UnknownSpaceError, match="valid: mnv2, xception, mnv1"):
        get_space("resnet")


def test_exhaustive_enumeration_helper_is_sound():
    # The brute-force helper must find each combination of a two-gene toy decode.
    class Toy:
        def decode(self, choose):
            return (choose("a", [1, 2, 3]), choose("b", ["x", "y"]))

    assert brute_force(Toy()) == set(itertools.product([1, 2, 3], ["x", "y"]))
