"""Latency: measurement, the per-kernel lookup table, latency budgets and pareto search."""

import json
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from nas.arch import kernels as K
from nas.cli.search import precheck
from nas.errors import UserError
from nas.hardware.latency import (
    LatencyError,
    LatencyPredictor,
    LookupTable,
    Timing,
    fingerprint,
    kernel_module,
    make_backend,
    measure,
    space_kernels,
)
from nas.search import report
from nas.search.run import run_search
from nas.search.study import trained_count
from search_spaces import get_space
from tests.tiny import TINY_LATENCY, stored_study, tiny, tiny_space

ROOT = Path(__file__).resolve().parents[1]
FAST = make_backend("torch", warmup=0, repeats=2)


def synthetic_table(path: Path, space, num_classes=10, in_channels=1) -> LookupTable:
    """A table for every kernel of `space` whose 'timings' are 1 ms per 10 MMACs (+1 us):
    deterministic test data, so that which genotypes fit a budget is known in advance."""
    table = LookupTable.create(path, space.name, fingerprint(), num_classes, in_channels)
    rows = []
    for k in space_kernels(space, num_classes, in_channels):
        ms = 0.001 + macs(k) / 1e7
        rows.append((k, Timing(ms, ms, 0.0, 1)))
    table.append(rows)
    return table


def macs(k) -> int:
    if k[0] == "conv":
        _, cin, cout, ks, _s, _p, groups, _h, _bn, _act = k
        return cin // groups * cout * ks * ks * K.out_size(k) ** 2
    if k[0] == "linear":
        return k[1] * k[2]
    return 0


def test_measure_gives_a_positive_median_and_restores_the_thread_count():
    before = torch.get_num_threads()
    t = measure(torch.nn.Conv2d(8, 8, 3, padding=1), (1, 8, 16, 16), threads=1, warmup=1, repeats=5)
    assert t.n == 5 and 0 < t.median_ms < 1000
    assert torch.get_num_threads() == before


class Takes(torch.nn.Module):
    """A module whose every call moves the clock `clock[0]` on by the next of `ms` milliseconds."""

    def __init__(self, clock: list[float], ms: list[float]):
        super().__init__()
        self.clock, self.ms = clock, list(ms)

    def forward(self, x):
        self.clock[0] += self.ms.pop(0) / 1e3
        return x


def test_measure_reports_median_mean_and_variance_of_the_timed_calls_only(monkeypatch):
    # 100 ms for the warm-up call, then 1, 2, 3, 4 and 10 ms: median 3, mean 4, variance 10
    # (the warm-up counted would make the mean 20).
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    t = measure(Takes(clock, [100, 1, 2, 3, 4, 10]), (1, 1), threads=1, warmup=1, repeats=5)
    assert (t.median_ms, t.mean_ms, t.var, t.n) == pytest.approx((3.0, 4.0, 10.0, 5))


def test_every_kernel_kind_has_a_module_that_runs_on_its_input():
    space = get_space("xception")
    kinds = {}
    for k in space_kernels(replace(space, width=(0.25,), resolution=(64,)), 10, 3):
        kinds.setdefault(k[0], k)
    assert set(kinds) == {"conv", "act", "add", "maxpool", "pool", "linear"}
    for k in kinds.values():
        module, shape = kernel_module(k)
        with torch.no_grad():
            y = module.eval()(torch.randn(*shape))
        if k[0] in ("conv", "maxpool"):
            assert y.shape[-1] == K.out_size(k)


def test_lut_build_on_a_tiny_space_measures_each_kernel_once_and_resumes(tmp_path):
    space = tiny_space()
    kernels = space_kernels(space, 10, 1)
    # every kernel of 30 random genotypes is among the space's kernels
    rng = random.Random(0)
    for _ in range(30):
        assert set(K.genotype_kernels(space.sample(rng), 10, 1)) <= set(kernels)
    path = tmp_path / "t.lut.jsonl"
    table = LookupTable.create(path, space.name, fingerprint(), 10, 1)
    assert table.fill(kernels[:50], FAST) == 50
    # An interrupted build: the file ends in a half-written line.
    with open(path, "a") as fh:
        fh.write('{"kernel": "conv:8:8:3:1:1:8:16:1:re')
    resumed = LookupTable.load(path)
    assert set(resumed.entries) == set(kernels[:50])
    assert resumed.fill(kernels, FAST) == len(kernels) - 50
    assert resumed.fill(kernels, FAST) == 0
    again = LookupTable.load(path)
    assert set(again.entries) == set(kernels)
    assert all(t.median_ms > 0 and t.n == 2 for t in again.entries.values())


def test_prediction_is_the_sum_of_the_genotypes_entries(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.lut.jsonl", space)
    g = space.sample(3)
    ks = K.genotype_kernels(g, 10, 1)
    assert table.predict(g, 10, 1) == pytest.approx(sum(table.entries[k].median_ms for k in ks))
    table.set_calibration({"depthwise": 2.0, "other": 0.5}, 1.25, samples=7)
    expected = 1.25 + sum((2.0 if k[0] == "conv" and k[6] > 1 else 0.5) * table.entries[k].median_ms
                          for k in ks)
    assert table.predict(g, 10, 1) == pytest.approx(expected)
    reloaded = LookupTable.load(table.path)
    assert reloaded.predict(g, 10, 1) == pytest.approx(expected)


def test_min_latency_is_the_smallest_prediction_in_the_space(tmp_path):
    from nas.hardware.latency import min_latency

    space = tiny_space()
    table = synthetic_table(tmp_path / "t.lut.jsonl", space)
    fastest = min_latency(table, space, 10, 1)
    rng = random.Random(1)
    samples = [table.predict(space.sample(rng), 10, 1) for _ in range(300)]
    assert fastest <= min(samples)
    assert fastest > 0


def test_table_from_another_device_is_refused(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.lut.jsonl", space)
    table.check(space.name, fingerprint())  # this device: fine
    other = {**fingerprint(), "name": "Some Other CPU"}
    with pytest.raises(LatencyError, match=r"measured on another device.*Some Other CPU"):
        table.check(space.name, other)
    with pytest.raises(LatencyError, match="is for space 'mnv1', not 'mnv2'"):
        table.check("mnv2", fingerprint())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nas.latency", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_foreign_table_and_keeps_it(tmp_path):
    path = tmp_path / "foreign.lut.jsonl"
    header = {"format": "nas-lut/1", "space": "mnv1", "num_classes": 10, "in_channels": 1,
              "fingerprint": {**fingerprint(), "name": "Another CPU", "torch": "1.0"}}
    path.write_text(json.dumps(header) + "\n")
    before = path.read_text()
    r = _cli("validate", "+space=mnv1", f"lut={path}", "n=3")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "another device" in r.stderr and "Another CPU" in r.stderr
    assert path.read_text() == before


@pytest.mark.parametrize("content", ["not json at all\n", '{"format": "nas-lut/1"}\n{"kernel": "x"}\n'])
def test_cli_refuses_a_corrupt_table(tmp_path, content):
    path = tmp_path / "bad.lut.jsonl"
    path.write_text(content)
    r = _cli("predict", "+space=mnv1", f"lut={path}", "+genotype=x")
    assert r.returncode == 2 and "is not a valid nas-lut/1 file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and path.read_text() == content


def test_cli_missing_table_and_bad_arguments(tmp_path):
    r = _cli("validate", "+space=mnv1", f"lut={tmp_path / 'nope.jsonl'}")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _cli("measure", "+space=mnv1")
    assert r.returncode == 2 and "valid: build, calibrate, validate, predict" in r.stderr
    r = _cli("build", "+space=mnv9")
    assert r.returncode == 2 and "mnv9" in r.stderr


def test_cli_build_then_predict_on_a_tiny_space(tmp_path):
    # The mnv1 space at width 0.25 and 32 px only: a real build, with few repeats.
    lut = tmp_path / "m.lut.jsonl"
    r = _cli("build", "+space=mnv1", "width=0.25", "resolution=32", f"lut={lut}", "warmup=0",
             "repeats=2", "calibration=4")
    assert r.returncode == 0, r.stderr
    assert "distinct kernels" in r.stdout and "calibrated on 4 networks" in r.stdout
    table = LookupTable.load(lut)
    assert table.scales != {"depthwise": 1.0, "other": 1.0}
    space = tiny_space()
    assert set(space_kernels(space, 10, 1)) == set(table.entries)
    g = space.sample(5)
    r = _cli("predict", "+space=mnv1", f"lut={lut}", f"+genotype={g}", "warmup=0", "repeats=2")
    assert r.returncode == 0, r.stderr
    assert f"predicted {table.predict(g, 10, 1):.3f} ms" in r.stdout and "0 newly measured" in r.stdout


def test_latency_budget_rejects_over_budget_genotypes_before_training(tmp_path):
    space = tiny_space()
    lut = tmp_path / "lut.jsonl"
    table = synthetic_table(lut, space)
    rng = random.Random(0)
    predicted = sorted(table.predict(space.sample(rng), 10, 1) for _ in range(200))
    budget = round(predicted[len(predicted) // 2], 3)  # about half the space is over it
    cfg = precheck([*TINY_LATENCY, f"+budget.latency_ms={budget}", "n_trials=4",
                    f"latency.lut={lut}"])
    summary = run_search(cfg, tmp_path / "run")
    study = stored_study(tmp_path / "run", summary["study"])
    rejected = [t for t in study.trials if t.user_attrs.get("status") == "rejected"]
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("trained", "pruned")]
    assert rejected and trained_count(study) == 4
    for t in rejected:
        assert t.user_attrs["latency_ms"] > budget and "latency_ms" in t.user_attrs["reason"]
        assert "accuracy" not in t.user_attrs and "epochs" not in t.user_attrs
        g = space.decode(lambda name, _o, t=t: t.params[name])
        assert t.user_attrs["latency_ms"] == pytest.approx(table.predict(g, 10, 1))
    assert all(t.user_attrs["latency_ms"] <= budget for t in trained)


def test_latency_budget_below_the_fastest_genotype_fails_at_once(tmp_path):
    space = tiny_space()
    lut = tmp_path / "lut.jsonl"
    synthetic_table(lut, space)
    cfg = precheck([*TINY_LATENCY, "+budget.latency_ms=0.01", f"latency.lut={lut}"])
    with pytest.raises(UserError, match=r"budget.latency_ms=0.01 is below the fastest genotype.*"
                                        r"predicted minimum is"):
        run_search(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "study.db").exists()


def test_latency_budget_without_a_table_measures_each_candidate(tmp_path):
    cfg = precheck([*TINY_LATENCY, "+budget.latency_ms=1000", "n_trials=2",
                    f"latency.dir={tmp_path / 'no-tables-here'}", "latency.repeats=3"])
    summary = run_search(cfg, tmp_path / "run")
    study = stored_study(tmp_path / "run", summary["study"])
    lats = [t.user_attrs["latency_ms"] for t in study.trials]
    assert len(lats) >= 2 and all(0 < x < 1000 for x in lats)


def test_candidates_over_the_mflops_budget_are_not_timed_without_a_table(tmp_path, monkeypatch):

    timed = []
    real = LatencyPredictor.__call__
    monkeypatch.setattr(LatencyPredictor, "__call__", lambda self, g: timed.append(g) or real(self, g))
    cfg = precheck([*TINY_LATENCY, "+budget.latency_ms=1000", "+budget.mflops=1.0",
                    "n_trials=2", f"latency.dir={tmp_path / 'no-tables-here'}", "latency.repeats=3"])
    summary = run_search(cfg, tmp_path / "run")
    study = stored_study(tmp_path / "run", summary["study"])
    over = [t for t in study.trials if t.user_attrs["mflops"] > 1.0]
    within = [t for t in study.trials if t.user_attrs["mflops"] <= 1.0]
    assert over and within, "the budget should split this space"
    for t in over:  # rejected on MFLOPs alone, never timed, still infeasible for the sampler
        assert "latency_ms" not in t.user_attrs and t.user_attrs["status"] == "rejected"
        assert t.constraints["mflops"] > 0
    assert all(0 < t.user_attrs["latency_ms"] < 1000 for t in within)
    assert len(timed) == len(within)


def test_negative_latency_budget_is_refused():
    with pytest.raises(UserError, match=r"budget\.latency_ms=-1 is not valid: must be a positive"):
        precheck([*TINY_LATENCY, "+budget.latency_ms=-1"])


def _trained(number: int, accuracy: float, cost: float, curve: list[float]):
    return optuna.trial.create_trial(values=[accuracy, cost],
                                     user_attrs={"status": "trained", "curve": curve, "mflops": cost,
                                                 "params_m": 0.0, "genotype": f"fake-{number}"})


def test_pareto_verdict_compares_with_no_more_costly_trials_at_the_same_epoch():
    from nas.search.pareto import pareto_verdict

    peers = [_trained(0, 0.9, 10.0, [0.5, 0.9]), _trained(1, 0.8, 20.0, [0.6, 0.8]),
             _trained(2, 0.95, 50.0, [0.9, 0.95])]
    # At 20 MFLOPs the peers are the first two: median at epoch 0 is 0.55.
    assert pareto_verdict(peers, 0, 0.50, 20.0, n_startup_trials=2, n_warmup_steps=0)
    assert not pareto_verdict(peers, 0, 0.56, 20.0, n_startup_trials=2, n_warmup_steps=0)
    # The expensive trial is no peer of a cheap one: nothing to compare with, no pruning.
    assert not pareto_verdict(peers, 0, 0.10, 5.0, n_startup_trials=1, n_warmup_steps=0)
    # Too few peers, or still warming up: no pruning.
    assert not pareto_verdict(peers, 0, 0.10, 20.0, n_startup_trials=3, n_warmup_steps=0)
    assert not pareto_verdict(peers, 0, 0.10, 20.0, n_startup_trials=2, n_warmup_steps=1)
    # At epoch 1 the median of the first two is 0.85.
    assert pareto_verdict(peers, 1, 0.84, 20.0, n_startup_trials=2, n_warmup_steps=0)


def test_pareto_search_prunes_trials_below_cheaper_peers_and_produces_a_front(tmp_path):
    """Pruning made certain: the study already holds trained trials that cost nothing and
    reached accuracy 1.0 at every epoch, so every new trial is below its peers' median."""
    args = tiny("objective=pareto", "proxy.epochs=3", "pruner.n_startup_trials=2", drop=["pruner"])
    summary = run_search(precheck([*args, "n_trials=2"]), tmp_path)
    study = stored_study(tmp_path, summary["study"])
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for i in range(2):
        study.add_trial(_trained(100 + i, 1.0, 0.0, [1.0, 1.0, 1.0]))
    run_search(precheck([*args, "n_trials=6"]), tmp_path)
    study = stored_study(tmp_path, summary["study"])
    assert trained_count(study) == 6
    new = [t for t in study.trials if not str(t.user_attrs.get("genotype")).startswith("fake")
           and t.user_attrs.get("status") in ("trained", "pruned")][2:]
    assert len(new) == 2
    for t in new:  # below the median (1.0) of the no-more-costly peers after the first epoch
        assert t.user_attrs["status"] == "pruned" and t.user_attrs["epochs"] == 1, t.user_attrs
    from nas.search.study import make_sampler

    cfg = precheck(args)
    assert isinstance(make_sampler(cfg, 0, 2), optuna.samplers.NSGAIISampler)  # sampler=auto
    assert isinstance(make_sampler(cfg, 0, 1), optuna.samplers.TPESampler)
    trained = report.ranked(study)
    front = report.pareto_front(trained)
    assert front
    for p in front:
        assert not any(q["accuracy"] >= p["accuracy"] and q["mflops"] < p["mflops"] for q in trained)
    for t in study.best_trials:
        assert t.values[1] == pytest.approx(t.user_attrs["mflops"])
    assert (tmp_path / "pareto_front.html").is_file()


def test_a_table_corrupt_deep_inside_names_the_line(tmp_path):
    from nas.hardware.latency import LatencyError, LookupTable

    path = tmp_path / "t.lut.jsonl"
    path.write_text('{"format": "nas-lut/1"}\n\n{"kernel": \n{"calibration": {}}\n')
    with pytest.raises(LatencyError, match="at line 3 "):
        LookupTable.load(path)
