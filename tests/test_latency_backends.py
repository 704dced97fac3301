"""Latency backends: one-kernel ONNX graphs, ONNX Runtime tables, fresh-process timing, and a
backend's table refused for another."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.arch import kernels as K
from nas.cli.search import precheck
from nas.errors import UserError
from nas.hardware.backends import kernel_graph, kernel_module, make_backend
from nas.hardware.latency import LatencyError, LookupTable, Timing, fingerprint, space_kernels
from nas.hardware.stopwatch import ort_session, time_fresh
from nas.search.run import run_search
from search_spaces import get_space
from tests.extras import need
from tests.tiny import stored_study, tiny, tiny_space

need("onnxruntime", "onnx", whole_module=True)
need("onnx", "onnx", whole_module=True)

ROOT = Path(__file__).resolve().parents[1]
# TINY_LATENCY with the sampler's own random start
SEARCH = tiny("space.resolution=[32]", drop=["budget.mflops", "sampler.n_startup_trials"])


def one_of_each_kind():
    kinds = {}
    space = replace(get_space("xception"), width=(0.25,), resolution=(64,))
    for k in space_kernels(space, 10, 3) + space_kernels(replace(get_space("mnv2"), width=(0.35,),
                                                                  resolution=(96,)), 10, 3):
        kinds.setdefault((k[0], k[-1] if k[0] == "conv" else k[1] if k[0] == "act" else ""), k)
    return list(kinds.values())


def test_each_kernel_graph_computes_what_its_pytorch_module_does():
    """Same weights, same input: the hand-written ONNX graph of a kernel is the exported
    kernel (conv with the batch norm folded in, then the activation's nodes)."""
    from onnx import numpy_helper

    keys = one_of_each_kind()
    assert {k[0] for k in keys} == {"conv", "act", "add", "maxpool", "pool", "linear"}
    assert {k[-1] for k in keys if k[0] == "conv"} >= {"", "relu", "relu6", "hswish"}
    for key in keys:
        graph, shape = kernel_graph(key)
        module, mshape = kernel_module(key)
        assert shape == mshape
        import onnx

        model = onnx.load_from_string(graph)
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
        module.eval()
        with torch.no_grad():  # give the module the graph's weights (and a plain batch norm)
            if key[0] == "conv":
                module[0].weight.copy_(weights["k_w"])
                if key[8]:
                    bn = module[1]
                    bn.weight.fill_(1.0), bn.bias.copy_(weights["k_b"])
                    bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)
            elif key[0] == "add":
                module.other.copy_(weights["k_other"])
            elif key[0] == "linear":
                module.weight.copy_(weights["k_w"]), module.bias.copy_(weights["k_b"])
            x = torch.randn(*shape)
            expected = module(x).numpy()
        got = ort_session(graph).run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=str(key))


def test_a_kernel_between_anchors_keeps_its_output_shape():
    """The anchored graph runs the kernel between two depthwise 1x1 convolutions; what it
    outputs has the kernel's output shape, and the anchors alone run too."""
    from nas.hardware.backends import anchor_pair_graph, sandwich_graph

    for key in one_of_each_kind():
        anchored = sandwich_graph(key)
        if key[0] in ("pool", "linear"):
            assert anchored is None
            continue
        graph, shape = anchored
        module, _ = kernel_module(key)
        with torch.no_grad():
            expected = module.eval()(torch.randn(*shape)).shape
        got = ort_session(graph).run(None, {"input": np.zeros(shape, np.float32)})[0]
        assert got.shape == tuple(expected), key
        pair, pshape = anchor_pair_graph(shape[1], shape[2])
        assert ort_session(pair).run(None, {"input": np.zeros(pshape, np.float32)})[0].shape == pshape


def test_onnxruntime_backend_times_kernels_and_networks():
    ort = make_backend("onnxruntime", warmup=1, repeats=3)
    fp = ort.fingerprint()
    assert fp["backend"] == "onnxruntime" and fp["onnxruntime"] and fp["device"] == "cpu"
    assert "backend" not in fingerprint()  # a torch table's fingerprint is as before backends
    g = tiny_space().sample(0)
    for key in set(K.genotype_kernels(g, 10, 1)):
        t = ort.time_kernel(key)
        assert t.n == 3 and 0 < t.median_ms < 100
    assert 0 < ort.time_network(g, 10, 1).median_ms < 100


def test_fresh_process_timing_runs_each_job_in_a_new_process():
    ort = make_backend("onnxruntime", warmup=1, repeats=3)
    torch_backend = make_backend("torch", warmup=1, repeats=3)
    g = tiny_space().sample(1)
    timings = time_fresh([ort.network_job(g, 10, 1), torch_backend.network_job(g, 10, 1)])
    assert [t.n for t in timings] == [3, 3] and all(t.median_ms > 0 for t in timings)


@pytest.mark.parametrize("bad", [{"device": "cuda"}, {"channels_last": True}])
def test_onnxruntime_backend_refuses_torch_only_settings(bad):
    with pytest.raises(LatencyError, match="valid"):
        make_backend("onnxruntime", **bad)
    with pytest.raises(LatencyError, match=r"latency.backend='tensorrt' is not valid; valid: torch, "
                                           r"onnxruntime"):
        make_backend("tensorrt")


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "nas.latency", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_builds_an_onnxruntime_table_that_a_torch_run_refuses(tmp_path):
    lut = tmp_path / "ort.lut.jsonl"
    r = _cli("build", "+space=mnv1", "width=0.25", "resolution=32", f"lut={lut}", "backend=onnxruntime",
             "warmup=0", "repeats=2", "calibration=4")
    assert r.returncode == 0, r.stderr
    assert "with onnxruntime" in r.stdout and "calibrated on 4 networks" in r.stdout
    table = LookupTable.load(lut)
    assert table.fingerprint["backend"] == "onnxruntime"
    assert set(table.entries) == set(space_kernels(tiny_space(), 10, 1))
    g = tiny_space().sample(2)
    r = _cli("predict", "+space=mnv1", f"lut={lut}", f"+genotype={g}", "backend=onnxruntime")
    assert r.returncode == 0 and f"predicted {table.predict(g, 10, 1):.3f} ms" in r.stdout
    before = lut.read_bytes()
    for args in (["predict", f"+genotype={g}"], ["build", "width=0.25", "resolution=32"]):
        r = _cli(args[0], "+space=mnv1", f"lut={lut}", *args[1:])  # torch, the default backend
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
        assert "measured on backend 'onnxruntime', not 'torch'" in r.stderr
    r = _cli("validate", "+space=mnv1", f"lut={lut}", "backend=tflite")
    assert r.returncode == 2 and "backend='tflite' is not valid; valid: torch, onnxruntime" in r.stderr
    assert lut.read_bytes() == before


def test_cli_validate_reports_the_stopwatch_noise_floor(tmp_path):
    lut = tmp_path / "t.lut.jsonl"
    table = LookupTable.create(lut, "mnv1", make_backend("onnxruntime").fingerprint(), 10, 1)
    table.append((k, Timing(0.01, 0.01, 0.0, 1)) for k in space_kernels(tiny_space(), 10, 1))
    r = _cli("validate", "+space=mnv1", "width=0.25", "resolution=32", f"lut={lut}",
             "backend=onnxruntime", "n=3", "warmup=0", "repeats=2", f"out={tmp_path / 'v.html'}")
    assert r.returncode == 0, r.stderr
    assert "each timed in a fresh process" in r.stdout and "stopwatch noise floor" in r.stdout
    assert re.search(r"Kendall tau: -?[0-9.]+ \(timed twice: (-?[0-9.]+|nan)\)", r.stdout), r.stdout


def synthetic_ort_table(path: Path) -> LookupTable:
    table = LookupTable.create(path, "mnv1", make_backend("onnxruntime").fingerprint(), 10, 1)
    table.append((k, Timing(0.002, 0.002, 0.0, 1)) for k in space_kernels(tiny_space(), 10, 1))
    return table


def test_search_with_an_onnxruntime_table_keeps_its_backend(tmp_path):
    lut = tmp_path / "ort.lut.jsonl"
    table = synthetic_ort_table(lut)
    args = [*SEARCH, "+budget.latency_ms=1", "n_trials=2", f"latency.lut={lut}"]
    summary = run_search(precheck([*args, "latency.backend=onnxruntime"]), tmp_path / "run")
    assert summary["study"].endswith("-onnxruntime")
    study = stored_study(tmp_path / "run", summary["study"])
    assert study.user_attrs["identity"]["latency"] == {"backend": "onnxruntime"}
    space = tiny_space()
    for t in study.trials:
        g = space.decode(lambda name, _o, t=t: t.params[name])
        assert t.user_attrs["latency_ms"] == pytest.approx(table.predict(g, 10, 1))
    # The same table asked for PyTorch eager latencies: refused, nothing changed.
    before = lut.read_bytes()
    with pytest.raises(UserError, match="measured on backend 'onnxruntime', not 'torch'"):
        run_search(precheck(args), tmp_path / "run2")
    assert lut.read_bytes() == before and not (tmp_path / "run2" / "study.db").exists()
    # Joining the onnxruntime study as a torch worker: refused as another study.
    with pytest.raises(UserError, match="latency"):
        run_search(precheck([*args, f"study_name={summary['study']}",
                             "latency.lut=null", f"latency.dir={tmp_path / 'none'}"]), tmp_path / "run")


def test_search_cli_refuses_bad_backends_in_one_line(tmp_path):
    lut = tmp_path / "ort.lut.jsonl"
    synthetic_ort_table(lut)
    lut_torch = tmp_path / "torch.lut.jsonl"
    lut_torch.write_text(json.dumps({"format": "nas-lut/1", "space": "mnv1", "num_classes": 10,
                                     "in_channels": 1, "fingerprint": fingerprint()}) + "\n")
    bad = tmp_path / "bad.lut.jsonl"
    bad.write_text('{"format": "nas-lut/1", "space": "mnv1"}\n{"kernel": "conv:1"}\n')
    cases = [(["latency.backend=tensorrt"], "latency.backend='tensorrt' is not valid"),
             ([f"latency.lut={lut_torch}", "latency.backend=onnxruntime"],
              "measured on backend 'torch', not 'onnxruntime'"),
             ([f"latency.lut={bad}", "latency.backend=onnxruntime"], "is not a valid nas-lut/1 file"),
             (["latency.backend=onnxruntime", "latency.device=cuda"], "not valid with latency.backend")]
    files = {p: p.read_bytes() for p in (lut, lut_torch, bad)}
    for extra, words in cases:
        r = subprocess.run([sys.executable, "-m", "nas.search", *SEARCH, "+budget.latency_ms=1", "n_trials=1",
                            *extra], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (extra, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p: p.read_bytes() for p in files} == files
    assert not list(tmp_path.glob("outputs/*/study.db"))
