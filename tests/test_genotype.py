import dataclasses

import pytest

from nas.arch.genotype import (
    Genotype,
    GenotypeError,
    HeadLayer,
    Stage,
    StemLayer,
    load_genotype,
    make_divisible,
    parse,
)
from search_spaces import get_space, mnv1, mnv2, xception

REFERENCES = [mnv2.REFERENCE, mnv1.REFERENCE, xception.REFERENCE]


def small(**stage_kw) -> Genotype:
    kw = {"block": "ir", "c": 16, "n": 1, "s": 1, "k": 3, "t": 6, "act": "relu6", "place": "ed"}
    kw.update(stage_kw)
    return Genotype(stages=(Stage(**kw),), stem=(StemLayer(16, 3, 2),), resolution=32)


@pytest.mark.parametrize("g", REFERENCES, ids=["mnv2", "mnv1", "xception"])
def test_reference_round_trips_through_every_form(g):
    assert parse(str(g)) == g
    assert Genotype.from_dict(g.to_dict()) == g
    assert Genotype.from_yaml(g.to_yaml()) == g
    assert str(parse(str(g))) == str(g)


@pytest.mark.parametrize("space", ["mnv2", "xception", "mnv1"])
def test_random_genotypes_round_trip(space):
    sp = get_space(space)
    for seed in range(100):
        g = sp.sample(seed)
        assert parse(str(g)) == g
        assert Genotype.from_yaml(g.to_yaml()) == g
        assert parse(str(g)).content_hash == g.content_hash


def test_mobilenetv2_canonical_string_is_the_documented_one():
    text = str(mnv2.REFERENCE)
    assert text.startswith("res224_w1.0_drop0.2:stem_c32_k3_s2_p1_relu6:ir_r1_k3_s1_e1_c16_ad_relu6_noskip:"
                           "ir_r2_k3_s2_e6_c24_aed_relu6_skip:")
    assert text.endswith(":ir_r1_k3_s1_e6_c320_aed_relu6_noskip:head_conv_c1280_k1_relu6")


def test_hash_is_stable_and_tells_genotypes_apart():
    # A digest of the canonical string: the same on every machine and run.
    assert mnv2.REFERENCE.content_hash == "ec9352fcd84e2575"
    assert len({g.content_hash for g in (mnv2.reference(w) for w in (0.5, 0.75, 1.0, 1.4))}) == 4
    assert hash(mnv2.reference()) == hash(mnv2.REFERENCE)


def test_genotype_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnv2.REFERENCE.width = 2.0


def test_parse_accepts_tokens_in_any_order_but_prints_one_spelling():
    a = parse("res32_w1.0_drop0.0:stem_c16_k3_s2_p1_relu:ir_c16_e6_k3_r1_s1_aed_relu6_noskip")
    b = parse("res32_w1.0_drop0.0:stem_c16_k3_s2_p1_relu:ir_r1_k3_s1_e6_c16_aed_relu6_noskip")
    assert a == b and str(a) == str(b)


def test_expansion_activation_is_dropped_when_there_is_no_expansion():
    assert small(t=1, place="ed") == small(t=1, place="d")
    assert small(t=1, place="ed").stages[0].place == "d"


def test_placement_accepts_words_and_letters():
    assert small(place=["expand", "dw"]).stages[0].place == "ed"
    assert small(place="pd").stages[0].place == "dp"  # canonical order
    assert small(place="").stages[0].place == ""
    assert "a-" in str(small(place=""))


def test_dict_form_holds_only_the_genes_of_the_block_type():
    d = mnv2.REFERENCE.to_dict()["stages"][1]
    assert d == {"block": "ir", "c": 24, "n": 2, "s": 2, "k": 3, "t": 6, "act": "relu6", "place": "ed",
                 "residual": True}
    x = xception.REFERENCE.to_dict()["stages"][0]
    assert x["m"] == 2 and x["grow"] == "first" and x["lead_act"] is False and "t" not in x


def test_make_divisible_follows_mobilenet_rounding():
    assert make_divisible(32 * 1.4) == 48
    assert make_divisible(24 * 0.5) == 16
    assert make_divisible(10) == 16  # 8 would be below 90% of 10
    assert make_divisible(3) == 8


@pytest.mark.parametrize(
    ("kwargs", "path", "words"),
    [
        ({"k": 4}, "k", "odd"),
        ({"t": 0}, "t", "in [1, 64]"),
        ({"c": 0}, "c", "in [1, 16384]"),
        ({"c": -8}, "c", "in [1, 16384]"),
        ({"c": 16385}, "c", "in [1, 16384]"),
        ({"n": 0}, "n", "in [1, 64]"),
        ({"k": 33}, "k", "in [1, 31]"),
        ({"s": 3}, "s", "valid: 1, 2"),
        ({"block": "conv"}, "block", "valid: ir, xc, ds"),
        ({"act": "gelu"}, "act", "valid: relu, relu6, hswish, silu"),
        ({"place": "x"}, "place", "valid letters"),
        ({"m": 2}, "m", "only to xc"),
        ({"residual": "yes"}, "residual", "true or false"),
    ],
)
def test_invalid_stage_names_the_field(kwargs, path, words):
    with pytest.raises(GenotypeError) as info:
        small(**kwargs)
    assert info.value.path == path
    assert words in str(info.value)


def test_impossible_residual_names_stage_and_field():
    g = mnv2.REFERENCE.to_dict()
    g["stages"][0]["residual"] = True  # 32 -> 16 channels, one block
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(g)
    assert info.value.path == "stages[0].residual"
    assert "impossible" in str(info.value)


def test_residual_with_stride_two_needs_a_second_repeat():
    with pytest.raises(GenotypeError, match=r"stages\[0\]\.residual"):
        small(s=2, n=1, residual=True)
    assert small(s=2, n=2, residual=True).stages[0].residual


def test_errors_from_the_dict_form_carry_the_stage_index():
    d = mnv2.REFERENCE.to_dict()
    d["stages"][3]["k"] = 4
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(d)
    assert info.value.path == "stages[3].k"
    d = mnv2.REFERENCE.to_dict()
    d["stages"][2]["kernel"] = 3
    with pytest.raises(GenotypeError, match=r"stages\[2\]\.kernel: unknown field 'kernel'"):
        Genotype.from_dict(d)


def test_errors_from_the_string_form_name_stage_and_field():
    with pytest.raises(GenotypeError) as info:
        parse("res224_w1.0_drop0.2:stem_c32_k3_s2_p1_relu6:ir_r1_k3_s1_e1_c16_ad_relu6_noskip:"
              "ir_r2_k4_s2_e6_c24_aed_relu6_skip")
    assert info.value.path == "stages[1].k"
    assert "ir_r2_k4" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "res224_w1.0_drop0.2", "res224_w1.0_drop0.2:zz_r1_c8",
     "res224_w1.0_drop0.2:ir_r1_k3", "res224_w1.0_drop0.2:ir_c8_c16",
     "res224_w1.0_drop0.2:ir_c8_wat", "res224_wx_drop0.2:ir_c8", "res224_w1.0_drop1.5:ir_c8",
     "res224_w0.0_drop0.2:ir_c8", "res224_w1.0_drop0.2:head_conv_c8:ir_c8"],
)
def test_malformed_strings_raise_value_errors(text):
    with pytest.raises(ValueError):
        parse(text)


def test_global_genes_are_validated():
    base = dict(stages=(Stage("ir", 16),))
    with pytest.raises(GenotypeError, match="width"):
        Genotype(**base, width=0)
    with pytest.raises(GenotypeError, match="dropout"):
        Genotype(**base, dropout=1.0)
    with pytest.raises(GenotypeError, match="resolution"):
        Genotype(**base, resolution=0)
    with pytest.raises(GenotypeError, match=r"stem\[0\]: a 7x7 conv"):
        Genotype(**base, stem=(StemLayer(8, 7, 1, 0),), resolution=4)
    with pytest.raises(GenotypeError, match="stages: a genotype needs at least one stage"):
        Genotype(stages=())
    with pytest.raises(GenotypeError, match=r"head\[0\]"):
        Genotype.from_dict({"stages": [{"block": "ir", "c": 8}], "head": [{"c": 8, "kind": "pool"}]})


def test_xception_only_genes_are_rejected_on_other_blocks():
    with pytest.raises(GenotypeError, match="order"):
        Stage("ds", 32, order="pd")
    with pytest.raises(GenotypeError, match="t"):
        Stage("xc", 32, t=6)


def test_load_genotype_reads_yaml_files_and_strings(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text(xception.REFERENCE.to_yaml())
    assert load_genotype(str(f)) == xception.REFERENCE
    assert load_genotype(str(mnv1.REFERENCE)) == mnv1.REFERENCE
    with pytest.raises(GenotypeError, match="does not exist"):
        load_genotype(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(GenotypeError, match="not valid YAML"):
        load_genotype(str(bad))


def test_head_and_stem_layers_validate():
    with pytest.raises(GenotypeError, match="kind"):
        HeadLayer(8, kind="fc")
    with pytest.raises(GenotypeError, match="p"):
        StemLayer(8, 3, 1, -1)


def test_an_empty_genotype_and_a_symlink_loop_are_named_as_such(tmp_path):
    from nas.arch.genotype import load_genotype

    with pytest.raises(GenotypeError, match="the genotype is empty"):
        load_genotype("  ")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(GenotypeError, match="broken symbolic link or a loop"):
        load_genotype(str(tmp_path / "a"))


def test_a_genotype_string_longer_than_a_file_name_loads():
    g = get_space("mnv2").reference
    assert len(str(g)) > 255  # longer than a file name may be
    assert load_genotype(str(g)) == g
