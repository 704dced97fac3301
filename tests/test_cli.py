import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, "-m", "nas.cost", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cost_report_for_a_space_prints_the_reference_and_the_space():
    r = run("+space=mnv2")
    assert r.returncode == 0, r.stderr
    assert "3,504,872" in r.stdout and "300,774,272" in r.stdout
    assert "stage 6 ir x1" in r.stdout
    assert "space mnv2" in r.stdout and "distinct genotypes" in r.stdout


def test_cost_report_for_a_genotype_string_and_yaml(tmp_path):
    from search_spaces import xception

    r = run(f"+genotype={xception.REFERENCE}", "format=json")
    data = json.loads(r.stdout)
    assert data["params"] == 22_855_952 and data["macs"] == 8_357_403_496
    f = tmp_path / "g.yaml"
    f.write_text(xception.reference(0.5, 128).to_yaml())
    r = run(f"+genotype={f}", "+num_classes=10")
    assert r.returncode == 0 and "classifier" in r.stdout


def test_width_override():
    r = run("+space=mnv2", "+width=0.5", "format=json")
    assert json.loads(r.stdout)["macs"] == 97_131_840


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["+space=resnet"], "unknown search space 'resnet'; valid: mnv2, xception, mnv1"),
        (["+genotype=res224_w1.0_drop0.2:ir_r1_k4_s1_e1_c16_ad_relu6_noskip"], "stages[0].k: 4"),
        (["+genotype=res224_w1.0_drop0.2:zz_c16"], "unknown part kind 'zz'"),
        (["+space=mnv2", "+width=abc"], "width='abc' is not valid: expected a number"),
        (["+space=mnv2", "+width=-1"], "width=-1.0 is not valid: must be in (0, 4]"),
        (["+space=mnv2", "+bogus=1"], "unknown key 'bogus'"),
        (["+space=mnv2", "+widht=0.5"], "unknown key 'widht': did you mean width?"),
        (["+space=mnv2", "format=xml"], "format='xml' is not valid"),
        (["+genotype=missing.yaml"], "does not exist"),
        (["nonsense"], "argument 'nonsense' is not key=value"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, words):
    r = run(*args)
    assert r.returncode == 2
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_slurm_multirun_without_the_cluster_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    from nas.cli import search
    from nas.cli.common import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "submitit" in name else real(name, *a))
    with pytest.raises(UsageError, match=r"needs hydra-submitit-launcher.*pip install 'nas\[cluster\]'"):
        search.precheck(["hydra/launcher=slurm", "+space=mnv2", "+budget.mflops=300"])
