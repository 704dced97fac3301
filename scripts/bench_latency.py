"""Latency lookup table: build time and prediction accuracy on this machine, from scratch.

    python scripts/bench_latency.py                  # mnv2, 100 validation genotypes
    python scripts/bench_latency.py --space xception --n 50

Builds a fresh table in a temporary folder (`python -m nas.latency build`), then validates
it on random genotypes measured whole (`python -m nas.latency validate`), and prints the
build time, the share of genotypes predicted within +-10%, MAPE and Kendall's tau. The
targets from the latency issue are printed beside them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--n", type=int, default=100, help="validation genotypes")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-latency-"))
    common = [f"+space={args.space}", f"lut={tmp / 'table.lut.jsonl'}", f"threads={args.threads}"]
    start = time.perf_counter()
    build = subprocess.run([sys.executable, "-m", "nas.latency", "build", *common], cwd=ROOT,
                           capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if build.returncode:
        sys.exit(build.stderr.strip())
    for line in build.stdout.splitlines():
        if "distinct kernels" in line or line.startswith("calibrated"):
            print(line)
    print(f"build time: {seconds:.0f} s (target <= 300 s)")
    val = subprocess.run([sys.executable, "-m", "nas.latency", "validate", *common, f"n={args.n}",
                          f"out={tmp / 'validation.html'}"], cwd=ROOT, capture_output=True, text=True)
    if val.returncode:
        sys.exit(val.stderr.strip())
    print("\n".join(line for line in val.stdout.splitlines()
                    if line.strip() and not line.startswith("networks:")))
    print("targets: >= 90% within +-10%, Kendall tau >= 0.9")


if __name__ == "__main__":
    main()
