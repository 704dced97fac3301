"""Wall time of a search with 1 worker vs N parallel workers on one shared study.

    python scripts/bench_workers.py                                   # SQLite file, 2 workers
    python scripts/bench_workers.py --storage postgresql+psycopg2://user@127.0.0.1:5432/db

Both runs use the same command line, n_trials and proxy; the N-worker run is a Hydra
multirun through submitit's local executor (`hydra/launcher=local`), one torch thread per
worker. Prints both wall times and the speed-up measured in this run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nas.search", *args], cwd=ROOT, capture_output=True,
                       text=True)
    seconds = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"search failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", help="storage URL (default: an SQLite file in a temporary folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--mflops", type=float, default=300)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-workers-"))
    tag = uuid.uuid4().hex[:6]
    kind = "postgres" if args.storage and args.storage.startswith("postgres") else "sqlite"
    common = [f"+space={args.space}", f"+budget.mflops={args.mflops}", f"n_trials={args.n_trials}",
              "reference=false", "wandb.mode=disabled", "proxy.threads=1", f"storage={kind}",
              "sampler=random"]

    def storage(name: str) -> list[str]:
        url = args.storage or f"sqlite:///{tmp / name}.db"
        return [f"storage.url={url}", f"study_name=bench-{name}-{tag}"]

    print(f"{args.space} under {args.mflops} MFLOPs, {args.n_trials} trained trials, "
          f"storage {kind}, random sampler", flush=True)
    one = run([*common, *storage("one"), f"hydra.run.dir={tmp / 'one'}"])
    print(f"1 worker:  {one:7.1f} s", flush=True)
    many = run(["-m", "hydra/launcher=local", *common, *storage("many"),
                f"+worker=range({args.workers})", f"hydra.sweep.dir={tmp / 'many'}"])
    print(f"{args.workers} workers: {many:7.1f} s")
    print(f"speed-up: {one / many:.2f}x with {args.workers} workers (ideal {args.workers}x)")


if __name__ == "__main__":
    main()
