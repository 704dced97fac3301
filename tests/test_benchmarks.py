"""Smoke runs of the benchmark scripts on tiny settings: they run and write what they say."""

import itertools
import json
import math
import subprocess
import sys
from dataclasses import replace
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
    check_two_seed_reference(data)
    runs = [json.loads(json.loads(line)["key"]) for line in
            (tmp_path / "fidelity.partial.jsonl").read_text().splitlines()]
    long = [r for r in runs if r[0].startswith("long")]
    assert len(long) == 8 and {r[3] for r in long} == {0, 1, 2, 3, 5000, 5001, 5002, 5003}  # two seeds
    assert all("proxy.lr=0.01" in r[4] for r in long)  # bench_task's reference recipe
    assert not any("proxy.lr=0.01" in r[4] for r in runs if not r[0].startswith("long"))
    assert (tmp_path / "fidelity.html").is_file()


def check_two_seed_reference(data: dict) -> None:
    """The reference ranking is the mean of two long runs; their own tau is reported beside it."""
    long = data["results"]["long"]
    first, second = long["seeds"]
    assert long["values"] == pytest.approx([(a + b) / 2 for a, b in zip(first, second, strict=True)])
    assert first != second  # two trainings, not one counted twice
    assert same(data["reference_seed_tau"], tau_b(first, second))


@pytest.mark.parametrize("name", ["fidelity.json", "fidelity_cluttered.json", "fidelity_digits.json"])
def test_the_published_fidelity_table_is_computed_from_its_own_values(name):
    data = json.loads((ROOT / "docs" / "bench" / name).read_text())
    assert len(data["table"]) == len(data["results"]) - 1  # every proxy against the long run
    check_fidelity_table(data)
    if "seeds" in data["results"]["long"]:  # runs before the two-seed reference have one
        check_two_seed_reference(data)


def check_task_summary(task: dict) -> None:
    """Spread, seed noise, ratio, tau and the width gap recomputed from the accuracies."""
    labels = [label for label, _ in task["genotypes"]]
    for r in task["results"].values():
        s0, s1 = r["seed0"], r["seed1"]
        assert len(s0) == len(s1) == len(labels)
        means = [(a + b) / 2 for a, b in zip(s0, s1, strict=True)]
        assert r["means"] == pytest.approx(means)
        spread = math.sqrt(sum((m - sum(means) / len(means)) ** 2 for m in means) / len(means))
        noise = sum(abs(a - b) for a, b in zip(s0, s1, strict=True)) / len(s0)
        assert r["spread_std"] == pytest.approx(spread)
        assert r["spread_range"] == pytest.approx(max(means) - min(means))
        assert r["seed_noise"] == pytest.approx(noise)
        assert r["ratio"] == pytest.approx(spread / noise)
        assert same(r["tau_seeds"], tau_b(s0, s1))
        assert all(map(same, r["tau_interval"], bootstrap(s0, s1, seed=0)))
        gap = means[labels.index("reference x1.0")] - means[labels.index("reference x0.35")]
        assert r["reference_gap_points"] == pytest.approx(100 * gap)


@pytest.mark.parametrize("name", ["task.json", "task_6_epochs.json", "task_14_epochs.json",
                                  "task_16_epochs.json", "task_large_digits.json",
                                  "task_seed1.json"])
def test_the_published_task_figures_are_computed_from_their_own_accuracies(name):
    check_task_summary(json.loads((ROOT / "docs" / "bench" / name).read_text()))


def test_task_script_smoke_and_a_fidelity_run_on_its_reference(tmp_path):
    """bench_task writes the figures of its own trainings; bench_proxy_fidelity --reference
    ranks proxies against those trainings without training them again."""
    task_dir, fid_dir = tmp_path / "task", tmp_path / "fidelity"
    r = subprocess.run([sys.executable, "scripts/bench_task.py", "--space", "mnv1", "--mflops", "28",
                        "--m", "2", "--epochs", "1", "--resolution", "16", "--datasets", "digits",
                        "--set", "proxy.subset=0.2", "--set", "space.width=[0.25]", "--out", str(task_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "spread / seed noise" in r.stdout and "Kendall tau, seed 0 vs seed 1" in r.stdout
    task = json.loads((task_dir / "task.json").read_text())
    assert [label for label, _ in task["genotypes"]] == [
        "random 0", "random 1", "reference x0.35", "reference x0.5", "reference x0.75", "reference x1.0"]
    check_task_summary(task)

    r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--reference",
                        str(task_dir / "task.json"), "--only", "1 ep, 16 px", "--only", "synflow",
                        "--set", "proxy.subset=0.2", "--out", str(fid_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reference, seed 0 vs 1" in r.stdout
    data = json.loads((fid_dir / "fidelity.json").read_text())
    digits = task["results"]["digits"]
    assert data["genotypes"] == [g for _, g in task["genotypes"]]
    assert data["results"]["long"]["seeds"] == [digits["seed0"], digits["seed1"]]
    assert data["long_epochs"] == 1 and data["data"] == "digits"
    assert [row["proxy"] for row in data["table"]] == ["1 ep, 16 px", "synflow"]
    check_fidelity_table(data)
    assert same(data["reference_seed_tau"], tau_b(digits["seed0"], digits["seed1"]))

    # --rescore: the same proxies ranked again against a reference, nothing run
    r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", "--reference",
                        str(task_dir / "task.json"), "--rescore", str(fid_dir / "fidelity.json"),
                        "--out", str(tmp_path / "rescored")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((tmp_path / "rescored" / "fidelity.json").read_text())
    assert again["table"] == data["table"] and again["rescored_from"] == "fidelity.json"
    assert not (tmp_path / "rescored" / "fidelity.partial.jsonl").read_text()  # nothing trained
    other = json.loads((task_dir / "task.json").read_text())
    other["genotypes"] = other["genotypes"][::-1]
    (tmp_path / "other_task.json").write_text(json.dumps(other))

    # bench_supernet --reference: a supernet trained on the task's data, scored against its
    # two-seed trainings and the fidelity run's proxy, on the whole split and a subset of it.
    sn_dir = tmp_path / "supernet"
    r = subprocess.run([sys.executable, "scripts/bench_supernet.py", "--reference",
                        str(task_dir / "task.json"),
                        "--dataset", "digits", "--fidelity", str(fid_dir / "fidelity.json"),
                        "--proxy-setting", "1 ep, 16 px",
                        "--supernet-epochs", "1", "--proxy-timed", "1", "--val-images", "0,50",
                        "--probe", "50",
                        "--set", "supernet.resolution=16", "--set", "supernet.random_subnets=1",
                        "--set", "proxy.subset=0.2", "--out", str(sn_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((sn_dir / "supernet_bench.json").read_text())
    rows = report["rows"]
    assert report["left_out"] == ["reference x0.35"]  # a width mnv1 does not offer

    def inside(values: list) -> list:
        return [v for i, v in enumerate(values) if i != 2]

    assert [row["genotype"] for row in rows] == inside(data["genotypes"])
    assert [row["standalone"] for row in rows] == inside(digits["means"])
    assert [row["proxy"] for row in rows] == inside(data["results"]["1 ep, 16 px"]["values"])
    assert all(abs(row["supernet_50"] * 50 - round(row["supernet_50"] * 50)) < 1e-9 for row in rows)
    assert report["supernet_recipe"]["mflops"] == 28  # trained within the task's budget
    for key in ("supernet", "supernet_50"):
        assert same(report[key]["kendall_tau"], tau_b([row[key] for row in rows], inside(digits["means"])))
        assert report["per_candidate"][key]["ratio"] == pytest.approx(
            report["proxy_timed_s"][0] / report["per_candidate"][key]["seconds"])
    assert "x cheaper than a proxy trial" in r.stdout
    probe = report["probe"]  # the teacher's one-gene neighbours, on 50 validation images
    assert probe["images"] == 50 and probe["genes"] and "one-gene neighbours" in r.stdout
    for v in [probe["teacher_acc"], *(x for g in probe["genes"].values() for x in (g["min"], g["max"]))]:
        assert abs(v * 50 - round(v * 50)) < 1e-9
    assert all(g["min"] <= g["mean"] <= g["max"] for g in probe["genes"].values())

    bad = [(["--reference", str(tmp_path / "none.json")], "is not a bench_task.py task.json"),
           (["--reference", str(task_dir / "task.json"), "--dataset", "cifar10"],
            "'cifar10' is not in"),
           (["--rescore", str(fid_dir / "fidelity.json")], "--rescore needs --reference"),
           (["--reference", str(tmp_path / "other_task.json"), "--rescore", str(fid_dir / "fidelity.json")],
            "ranked other genotypes than --reference"),
           (["--reference", str(task_dir / "task.json"), "--rescore", str(tmp_path / "none.json")],
            "is not a bench_proxy_fidelity.py fidelity.json")]
    for extra, message in bad:
        r = subprocess.run([sys.executable, "scripts/bench_proxy_fidelity.py", *extra, "--out",
                            str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "bad").exists()  # refused before anything is written


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


def test_the_probe_walks_every_one_gene_neighbour_within_the_budget():
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_supernet import neighbours

    from nas.arch.cost import cost
    from nas.training.supernet import teacher_within
    from search_spaces import get_space

    space = get_space("mnv2")
    teacher = teacher_within(space, 300, 10, 3)
    found = neighbours(space, teacher, 300, 10, 3)
    assert {gene for gene, _ in found} >= {"n", "k", "t", "residual", "place", "act"}
    for gene, g in found:
        assert space.contains(g) and cost(g, 10, 3).mflops <= 300
        differ = [(i, f) for i, (a, b) in enumerate(zip(g.stages, teacher.stages, strict=True))
                  for f in ("n", "k", "t", "act", "place", "residual") if getattr(a, f) != getattr(b, f)]
        differ += [(None, f) for f in ("width", "resolution", "stem", "head")
                   if getattr(g, f) != getattr(teacher, f)]
        # t=1 drops the expansion, and its activation with it: the one gene that moves another
        assert [f for _, f in differ] in ([gene], ["t", "place"] if gene == "t" else [gene]), (gene, differ)
    assert len({str(g) for _, g in found}) == len(found)


def test_the_sharing_narrowings_keep_what_they_say():
    """bench_sharing's spaces: `width` has the width as its one elastic gene, at the full
    space's teacher; `tame` has no t=1, every shortcut and one placement; both within the full
    space. A bad --spaces exits 2."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_sharing import narrowed

    from nas.training.supernet import teacher_within
    from search_spaces import get_space

    full = get_space("mnv2")
    teacher = teacher_within(full, 300, 10, 1)
    width = narrowed("width", full, teacher)
    for sc in width.stages:
        assert all(len(getattr(sc, gene)) == 1 for gene in ("c", "n", "k", "t", "act", "place", "residual"))
    assert len(width.stem) == len(width.head) == len(width.resolution) == 1 and width.width == full.width
    assert all(width.contains(replace(teacher, width=w)) for w in full.width)
    tame = narrowed("tame", full, teacher)
    assert all(sc.t == (3, 6) and sc.residual == (True,) and sc.place == ("ed",) for sc in tame.stages)
    assert narrowed("full", full, teacher) is full
    script = str(ROOT / "scripts" / "bench_sharing.py")
    bad = subprocess.run([sys.executable, script, "--spaces", "full,wide"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "'wide' is not valid; valid: full, tame, width" in bad.stderr
