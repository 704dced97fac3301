"""The schemas describe themselves: every key of every command with its default and comment,
which --help and the docs' configuration page print; and the one command-line parser of the
commands that are not Hydra apps."""

import subprocess
import sys

import pytest

from nas.cli.common import parse_command
from nas.common.config import COMMAND_SCHEMAS, CostRunConfig, LatencyRunConfig, ProxyConfig
from nas.common.schema import describe
from nas.errors import UserError


def test_every_key_of_every_command_has_a_comment():
    missing = [f"{cmd} {k.key}" for cmd, schema in COMMAND_SCHEMAS.items() for k in describe(schema)
               if not k.comment]
    assert not missing


def test_describe_flattens_nested_schemas_and_finds_inherited_comments():
    keys = {k.key: k for k in describe(COMMAND_SCHEMAS["nas.search"])}
    assert keys["proxy.epochs"].default == 2 and keys["proxy.epochs"].type == "int"
    # momentum is declared on RecipeConfig, which ProxyConfig extends
    assert "momentum" not in ProxyConfig.__annotations__
    assert keys["proxy.momentum"].comment == "sgd and rmsprop momentum"
    # a same-line comment wins over a section comment above the field
    assert keys["data.in_memory"].comment.startswith("auto (decode up front")
    # a field with its comment on the lines above it
    assert keys["budget"].comment.startswith("Hard limits checked from the genotype alone")
    assert keys["space.width"].default is None and keys["budget"].default == {}


def test_old_and_new_spellings_parse_alike():
    a = parse_command(LatencyRunConfig, ["+space=mnv2", "width=0.5,1.0", "threads=2"], "nas.latency")
    b = parse_command(LatencyRunConfig, ["space=mnv2", "width=[0.5,1.0]", "threads=2"], "nas.latency")
    assert a == b and a.width == [0.5, 1.0] and a.threads == 2
    one = parse_command(LatencyRunConfig, ["resolution=160"], "nas.latency")
    assert one.resolution == [160]


@pytest.mark.parametrize(("argv", "words"), [
    (["widht=0.5"], "unknown key 'widht': did you mean width?"),
    (["num_classes=ten"], "num_classes='ten' is not valid: expected an integer"),
    (["num_classes=0"], "num_classes=0 is not valid: must be in [1, 1000000]"),
    (["width=nan"], "width=nan is not valid: must be a finite number"),
    (["space"], "argument 'space' is not key=value"),
    (["~space"], "~space: a key cannot be removed here"),
])
def test_refusals_name_the_key_and_what_is_valid(argv, words):
    with pytest.raises(UserError) as err:
        parse_command(CostRunConfig, argv, "nas.cost")
    assert words in str(err.value)


@pytest.mark.parametrize("argv", [["nas.cost"], ["nas.latency"], ["nas.search"], ["nas.train"],
                                  ["nas.supernet", "train"], ["nas.supernet"]])
def test_help_lists_every_key_with_its_default(argv):
    r = subprocess.run([sys.executable, "-m", *argv, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for k in describe(COMMAND_SCHEMAS[argv[0]]):
        shown = [ln for ln in lines if ln.strip().startswith(f"{k.key}=")]
        assert len(shown) == 1, k.key
        assert k.comment in shown[0], k.key


def test_a_misspelt_export_option_names_the_closest():
    r = subprocess.run([sys.executable, "-m", "nas.export", "outputs/none", "--top_k", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "did you mean --top-k?" in r.stderr
