#!/usr/bin/env bash
# GPU-only facts, checked on a machine with a CUDA device (the CPU test suite cannot):
#   1. a 3-trial search with proxy.precision=16-mixed, two workers sharing one GPU;
#   2. a 1-epoch nas.train with EMA on the GPU, interrupted-and-resumed from its checkpoint;
#   3. the export it writes is CPU float32 and runs in onnxruntime.
# Without a CUDA device it says so and exits 0. Run from the repository root:
#   bash scripts/check_gpu.sh
set -euo pipefail
PY=${PYTHON:-python}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "check_gpu: no CUDA device here (torch.cuda.is_available() is False): nothing to verify"
    exit 0
fi
"$PY" -c "import torch; print('check_gpu: CUDA device', torch.cuda.get_device_name(0), '- torch', torch.__version__)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export WANDB_MODE=disabled
TINY=(+space=mnv1 +budget.mflops=28 proxy.resolution=16 space.width=[0.25] reference=false
      wandb.mode=disabled study_name=gpu)

# 1. Mixed precision on the GPU, two workers on one GPU (the default launcher runs them in turn;
#    workers_per_gpu=2 maps both to GPU 0).
"$PY" -m nas.search -m "${TINY[@]}" n_trials=3 proxy.epochs=2 proxy.accelerator=gpu \
    proxy.precision=16-mixed workers_per_gpu=2 +worker='range(2)' hydra.sweep.dir="$work/sweep" \
    > "$work/search.log" 2>&1 || { tail -n 40 "$work/search.log"; exit 1; }
"$PY" - "$work/sweep/study.db" <<'EOF'
import sys
import optuna
study = optuna.load_study(study_name="gpu", storage=f"sqlite:///{sys.argv[1]}")
done = [t for t in study.trials if t.user_attrs.get("status") in ("trained", "pruned")]
workers = {t.user_attrs["worker"] for t in done}
assert len(done) >= 3, f"only {len(done)} trained trials"
assert study.user_attrs["identity"]["proxy"]["precision"] == "16-mixed"
print(f"check_gpu: OK search: {len(done)} trials trained in 16-mixed on the GPU by {len(workers)} "
      "workers; the precision is part of the study")
EOF

# 2. Full training with EMA on the GPU; an interrupted run resumes from its checkpoint.
G="res128_w0.5_drop0.0:stem_c16_k3_s2_p1_relu:ds_r1_k3_s1_c32_adp_relu_noskip:ds_r2_k3_s2_c64_adp_relu_skip"
TRAIN=("+genotype=$G" resolution=32 trainer.max_epochs=1 trainer.ema=true trainer.accelerator=gpu
       trainer.precision=16-mixed trainer.progress=false wandb.mode=disabled "hydra.run.dir=$work/train")
"$PY" -m nas.train "${TRAIN[@]}" > "$work/train.log" 2>&1 || { tail -n 40 "$work/train.log"; exit 1; }
rm "$work/train/result.json"   # as if it had been interrupted after its last checkpoint
"$PY" -m nas.train "${TRAIN[@]}" > "$work/resume.log" 2>&1 || { tail -n 40 "$work/resume.log"; exit 1; }
grep -q "resuming from" "$work/resume.log" || { echo "check_gpu: FAILED: the rerun did not resume"; exit 1; }
echo "check_gpu: OK train: 1 epoch with EMA in 16-mixed on the GPU, resumed from checkpoints/last.ckpt"

# 3. The export is CPU float32, whatever trained it, and runs in onnxruntime.
"$PY" - "$work/train/exported" <<'EOF'
import json, sys
import numpy as np, onnxruntime as ort, torch
folder = sys.argv[1]
bad = {k: (v.device.type, v.dtype) for k, v in torch.load(f"{folder}/state_dict.pt", weights_only=True).items()
       if v.is_floating_point() and (v.device.type != "cpu" or v.dtype != torch.float32)}
assert not bad, bad
info = json.load(open(f"{folder}/info.json"))
s = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
out = s.run(None, {"input": np.random.rand(2, 1, 32, 32).astype(np.float32)})[0]
assert out.shape == (2, 10) and np.isfinite(out).all()
print(f"check_gpu: OK export: state dict CPU float32, ONNX runs (relative diff "
      f"{info['onnx_max_rel_diff']:.1e}), test accuracy {info['test_acc']:.3f}")
EOF
echo "check_gpu: all GPU checks passed"
