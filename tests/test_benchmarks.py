"""Smoke runs of the benchmark scripts on tiny settings: they run and write what they say."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nas.common.stats import bootstrap, spearman

ROOT = Path(__file__).resolve().parents[1]


def tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b from its definition, pair by pair (NaN when either list is constant)."""
    both = first = second = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        sa, sb = (a[i] > a[j]) - (a[i] < a[j]), (b[i] > b[j]) - (b[i] < b[j])
        both, first, second = both + sa * sb, first + sa * sa, second + sb * sb
    return both / math.sqrt(first * second) if first and second else math.nan


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def check_fidelity_table(data: dict) -> None:
    """Each row's tau, interval and rho are those of its proxy's values against the long run's."""
    truth = data["results"]["long"]["values"]
    for row in data["table"]:
        values = data["results"][row["proxy"]]["values"]
        assert same(row["tau"], tau_b(values, truth)), row
        assert all(map(same, row["tau_90"], bootstrap(values, truth, seed=0))), row
        assert same(row["rho"], spearman(values, truth)), row


def test_proxy_fidelity_script_smoke(tmp_path):
    r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--space", "mnv1",
                        "--mflops", "28", "--m", "4", "--long-epochs", "2", "--out", str(tmp_path),
                        "--only", "1 ep, 16 px", "--only", "2 ep, 16 px", "--only", "synflow",
                        "--only", "grad_norm", "--only", "naswot", "--jobs", "2",
                        "--set", "proxy.subset=0.2", "--set", "space.width=[0.25]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ranking vs the long run (2 epochs" in r.stdout
    data = json.loads((tmp_path / "fidelity.json").read_text())
    names = [row["proxy"] for row in data["table"]]
    assert names == ["2 ep, 16 px", "1 ep, 16 px", "synflow", "grad_norm", "naswot"]
    assert len(data["genotypes"]) == 4 and len(data["results"]["long"]["values"]) == 4
    assert all(row["seconds"] > 0 for row in data["table"])
    assert all(0 <= v <= 1 for v in data["results"]["long"]["values"])
    check_fidelity_table(data)  # NaN where a proxy ties every genotype
    assert (tmp_path / "fidelity.html").is_file()


def test_the_published_fidelity_table_is_computed_from_its_own_values():
    data = json.loads((ROOT / "docs" / "bench" / "fidelity.json").read_text())
    assert len(data["table"]) == len(data["results"]) - 1  # every proxy against the long run
    check_fidelity_table(data)


def test_proxy_fidelity_script_rejects_unknown_setting(tmp_path):
    r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--only", "3 ep",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown setting '3 ep'" in r.stderr and "1 ep, 16 px" in r.stderr
    assert "Traceback" not in r.stderr


def test_search_efficiency_script_smoke(tmp_path):
    r = subprocess.run([sys.executable, "scripts/bench_search.py", "--space", "mnv1", "--mflops", "28",
                        "--trials", "3", "--seeds", "1", "--out", str(tmp_path),
                        "--set", "proxy.epochs=1", "--set", "proxy.subset=0.2",
                        "--set", "space.width=[0.25]", "--set", "proxy.resolution=16",
                        "--set", "proxy.prefilter_warmup=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "search.json").read_text())
    assert set(data["curves"]) == {"tpe", "random", "nsga2", "tpe + synflow pre-filter"}
    for runs in data["curves"].values():
        (curve,) = runs
        assert len(curve) == 3 and curve == sorted(curve)  # best-so-far never decreases
    assert (tmp_path / "search.html").is_file()
    assert "best proxy accuracy after n trained trials" in r.stdout


def test_proxy_fidelity_plot_only_redraws_from_the_json(tmp_path):
    missing = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--plot-only",
                              "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "fidelity.json" in missing.stderr
    (tmp_path / "fidelity.json").write_text((ROOT / "docs" / "bench" / "fidelity.json").read_text())
    r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--plot-only",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    html = (tmp_path / "fidelity.html").read_text()
    data = json.loads((tmp_path / "fidelity.json").read_text())
    for row in data["table"]:  # every training proxy is a trace named with its tau; zero-cost not
        shown = f"{row['proxy']} (tau {row['tau']:.2f})" in html
        assert shown == (row["proxy"] not in ("synflow", "grad_norm", "naswot")), row["proxy"]
