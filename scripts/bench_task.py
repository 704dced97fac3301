"""Does a dataset tell networks apart? Spread between genotypes against seed noise.

    python scripts/bench_task.py                                   # both datasets, the defaults
    python scripts/bench_task.py --datasets cluttered_digits --epochs 10 --set data.clutter=4

Trains M random genotypes of a space under an MFLOPs budget plus the space's reference
network at several widths (MobileNetV2 0.35/0.5/0.75/1.0 for mnv2), each with the benchmarks'
reference recipe (`--epochs` at `--resolution`, the proxy's optimizer settings) and with two
seeds, on each dataset. Prints, per dataset: the spread between genotypes (std and range of
the two-seed mean accuracy), the seed noise (mean |seed 0 - seed 1| of a genotype), their
ratio, Kendall's tau between the two seeds' rankings (with a bootstrap 90% interval), and
the accuracy gap between the narrowest and widest reference. Writes `task.json` into --out.

The reference recipe: 12 epochs at 32 px with the proxy's optimizer settings at a peak
learning rate of 0.01 (at the proxy's 0.03 about one training in two of some genotypes stayed
at chance for epochs on cluttered_digits, which made the seed noise), and (for
cluttered_digits) 5,000 training and 2,000 validation images (`RECIPE`; a `--set` of the same
key replaces it). 20 genotypes x 2 seeds took 88 minutes of 2 cores on cluttered_digits and
24 more on digits (docs/benchmarks.md).

Finished trainings are kept in `task.partial.jsonl` (rerunning resumes). Trainings run in
--jobs processes of one thread each; accuracies are validation accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

REFERENCE_WIDTHS = (0.35, 0.5, 0.75, 1.0)
RECIPE = ("proxy.lr=0.01", "data.n_train=5000", "data.n_val=2000",  # data.*: cluttered_digits only
          "data.n_test=100")
_SEARCHERS: dict[tuple, object] = {}


def applies(setting: str, dataset: str) -> bool:
    """Whether an override of the recipe or of --set is used on `dataset`: data.* keys are the
    generator's, for cluttered_digits only."""
    return dataset == "cluttered_digits" or not setting.startswith("data.")


def recipe_for(dataset: str, sets: list[str]) -> list[str]:
    """The reference recipe's overrides on `dataset`, less the keys `sets` gives itself.
    bench_proxy_fidelity trains its long runs so."""
    given = {s.split("=", 1)[0] for s in sets}
    return [r for r in RECIPE if r.split("=", 1)[0] not in given and applies(r, dataset)]


def _searcher(space: str, mflops: float, out: str, overrides: tuple[str, ...]):
    key = (space, mflops, overrides)
    if key not in _SEARCHERS:
        from nas.cli.search import precheck
        from nas.common.tracking import Tracker
        from nas.search.evaluate import ProxyData
        from nas.search.loop import Searcher, set_threads
        from nas.search.run import apply_space_overrides

        set_threads(1)
        cfg = precheck([f"+space={space}", f"+budget.mflops={mflops}", "wandb.mode=disabled",
                        "reference=false", f"hydra.run.dir={out}", *overrides])
        sp = apply_space_overrides(cfg)
        tracker = Tracker("disabled", "", None, "task", out)
        _SEARCHERS[key] = Searcher(cfg, sp, None, ProxyData(cfg, sp), tracker)
    return _SEARCHERS[key]


def train(job: dict) -> dict:
    """One genotype, one seed, one dataset: its validation accuracy and seconds."""
    from nas.arch.genotype import parse

    s = _searcher(job["space"], job["mflops"], job["out"], tuple(job["overrides"]))
    start = time.perf_counter()
    acc = s.train(parse(job["genotype"]), seed=job["seed"]).accuracy
    return {**{k: job[k] for k in ("dataset", "index", "seed")}, "accuracy": float(acc),
            "seconds": time.perf_counter() - start}


def genotypes(space_name: str, mflops: float, m: int, seed: int) -> list[tuple[str, str]]:
    """(label, genotype string): M random ones under the budget, then the scaled references."""
    from nas.arch.cost import cost
    from search_spaces import get_space

    space = get_space(space_name)
    picked, k = [], 0
    while len(picked) < m:
        g = space.sample(seed * 100_000 + k)
        k += 1
        if cost(g, 10, 1).mflops <= mflops and str(g) not in {p for _, p in picked}:
            picked.append((f"random {len(picked)}", str(g)))
    for w in REFERENCE_WIDTHS:
        picked.append((f"reference x{w}", str(replace(space.reference, width=w))))
    return picked


def summarize(labels: list[str], acc: dict[tuple[int, int], float]) -> dict:
    from nas.common.stats import bootstrap, kendall

    n = len(labels)
    s0, s1 = [acc[(i, 0)] for i in range(n)], [acc[(i, 1)] for i in range(n)]
    means = [(x + y) / 2 for x, y in zip(s0, s1, strict=True)]
    noise = statistics.fmean(abs(x - y) for x, y in zip(s0, s1, strict=True))
    spread = statistics.pstdev(means)
    narrow = means[labels.index(f"reference x{REFERENCE_WIDTHS[0]}")]
    wide = means[labels.index(f"reference x{REFERENCE_WIDTHS[-1]}")]
    lo, hi = bootstrap(s0, s1)
    return {"spread_std": spread, "spread_range": max(means) - min(means), "seed_noise": noise,
            "ratio": spread / noise if noise > 0 else float("inf"), "tau_seeds": kendall(s0, s1),
            "tau_interval": [lo, hi], "reference_gap_points": 100 * (wide - narrow),
            "mean_accuracy": statistics.fmean(means), "means": means, "seed0": s0, "seed1": s1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--mflops", type=float, default=300)
    ap.add_argument("--m", type=int, default=16, help="random genotypes (the references come on top)")
    ap.add_argument("--datasets", default="cluttered_digits,digits")
    ap.add_argument("--epochs", type=int, default=12, help="the reference recipe's epochs")
    ap.add_argument("--resolution", type=int, default=32, help="the reference recipe's resolution")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides, e.g. data.n_train=5000 (cluttered_digits only for data.*)")
    ap.add_argument("--seed", type=int, default=0, help="which random genotypes")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="bench_task")
    args = ap.parse_args()

    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    picked = genotypes(args.space, args.mflops, args.m, args.seed)
    labels = [label for label, _ in picked]
    datasets = args.datasets.split(",")
    partial = out / "task.partial.jsonl"
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[(row["dataset"], row["index"], row["seed"])] = row
    jobs = []
    sets = [*recipe_for("cluttered_digits", args.set), *args.set]  # every override; the record
    for dataset in datasets:
        extra = [s for s in sets if applies(s, dataset)]
        overrides = [f"data={dataset}", f"proxy.epochs={args.epochs}", f"proxy.resolution={args.resolution}",
                     "pruner=none", *extra]
        for i, (_, g) in enumerate(picked):
            for seed in (0, 1):
                if (dataset, i, seed) not in done:
                    jobs.append({"dataset": dataset, "index": i, "seed": seed, "genotype": g,
                                 "space": args.space, "mflops": args.mflops, "out": str(out),
                                 "overrides": overrides})
    print(f"{len(picked)} genotypes x 2 seeds x {len(datasets)} datasets: {len(jobs)} trainings to run "
          f"({len(done)} done before), {args.epochs} epochs at {args.resolution} px, {args.jobs} processes",
          flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool, open(partial, "a") as log:
        futures = [pool.submit(train, job) for job in jobs]
        for k, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            done[(row["dataset"], row["index"], row["seed"])] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"[{time.perf_counter() - started:7.0f}s] {k}/{len(jobs)} {row['dataset']} "
                  f"{labels[row['index']]} seed {row['seed']}: {row['accuracy']:.4f} "
                  f"in {row['seconds']:.0f}s",
                  flush=True)

    results = {}
    for dataset in datasets:
        keys = [(dataset, i, s) for i in range(len(picked)) for s in (0, 1)]
        acc = {(i, s): done[(d, i, s)]["accuracy"] for d, i, s in keys}
        seconds = statistics.fmean(done[k]["seconds"] for k in keys)
        results[dataset] = {**summarize(labels, acc), "seconds_per_training": seconds}
    header = f"{'':34}" + "".join(f"{d:>20}" for d in datasets)
    rows = [("spread between genotypes (std)", "spread_std", 100, "{:.2f} pts"),
            ("spread between genotypes (range)", "spread_range", 100, "{:.2f} pts"),
            ("seed noise (mean |s0 - s1|)", "seed_noise", 100, "{:.2f} pts"),
            ("spread / seed noise", "ratio", 1, "{:.2f}"),
            ("Kendall tau, seed 0 vs seed 1", "tau_seeds", 1, "{:.3f}"),
            (f"ref x{REFERENCE_WIDTHS[-1]} - ref x{REFERENCE_WIDTHS[0]}", "reference_gap_points", 1,
             "{:.2f} pts"),
            ("mean accuracy", "mean_accuracy", 100, "{:.2f} %"),
            ("seconds per training (1 thread)", "seconds_per_training", 1, "{:.0f}")]
    print(header)
    for name, key, scale, fmt in rows:
        print(f"{name:34}" + "".join(f"{fmt.format(results[d][key] * scale):>20}" for d in datasets))
    print(f"{'tau 90% bootstrap interval':34}" + "".join(
        f"{'[{:.2f}, {:.2f}]'.format(*results[d]['tau_interval']):>20}" for d in datasets))
    payload = {"args": vars(args), "overrides": sets, "genotypes": picked, "results": results,
               "cpu": os.cpu_count()}
    (out / "task.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {out / 'task.json'}")


if __name__ == "__main__":
    main()
