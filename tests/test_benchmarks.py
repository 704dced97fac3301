"""Smoke runs of the benchmark scripts on tiny settings: they run and write what they say."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    for row in data["table"]:
        assert row["seconds"] > 0
        assert row["tau"] != row["tau"] or -1 <= row["tau"] <= 1  # NaN when a proxy ties everything
        low, high = row["tau_90"]
        assert low != low or -1 <= low <= high <= 1
    assert all(0 <= v <= 1 for v in data["results"]["long"]["values"])
    assert (tmp_path / "fidelity.html").is_file()


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
