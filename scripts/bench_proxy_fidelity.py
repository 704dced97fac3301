"""Proxy fidelity: do cheap proxies rank genotypes like a long training run does?

    python scripts/bench_proxy_fidelity.py                          # mnv2 under 300 MFLOPs, M=16
    python scripts/bench_proxy_fidelity.py --set data=cluttered_digits --m 12 --jobs 1
    python scripts/bench_proxy_fidelity.py --reference docs/bench/task.json --dataset cluttered_digits

Draws M random genotypes of a space under an MFLOPs budget, trains each with the benchmarks'
reference recipe (`--long-epochs` at 32 px and the rest of `bench_task.py`'s RECIPE: peak rate
0.01, and on cluttered_digits 5,000/2,000 images, for every run) with two seeds, whose mean
accuracy is the reference ranking, and with each cheap proxy setting below, and scores each with the
zero-cost proxies (synflow, grad_norm, naswot). Prints, per proxy, Kendall's tau (with a
bootstrap 90% interval over the genotypes) and Spearman's rho of its ranking against the
reference, and its seconds per genotype. The rows "... other seed" retrain the same networks
with other seeds: their tau is how far seed noise alone moves a proxy's ranking; the line
"reference, seed 0 vs seed 1" is the same for the long runs.

`--reference task.json` takes the genotypes, the reference accuracies (the two seeds of the
reference recipe) and the data settings from a `scripts/bench_task.py` result instead of
training them again; `--dataset` picks which of its datasets (the proxies then run on it,
with the same data settings). `--rescore fidelity.json` with `--reference` runs nothing: it
ranks that earlier run's proxies (the same genotypes, on the same data, checked) against the
reference given. Writes `fidelity.json` and a scatter plot `fidelity.html`
(each training proxy's accuracy vs the reference) into --out.

Finished trainings are kept in `fidelity.partial.jsonl`: rerunning the same command after
an interruption resumes. Trainings run in --jobs processes of one thread each (default 2,
one per core); seconds per genotype are measured inside each process, so they hold for one
core. `--plot-only` redraws the plot from an existing fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# name -> (proxy overrides on top of conf/proxy/default.yaml, seed offset). Every setting
# names its epochs and resolution, so the rows mean the same whatever the defaults are.
SETTINGS = {
    "4 ep, 32 px": (["proxy.epochs=4", "proxy.resolution=32"], 0),
    "4 ep, 32 px, other seed": (["proxy.epochs=4", "proxy.resolution=32"], 1000),
    "2 ep, 32 px": (["proxy.epochs=2", "proxy.resolution=32"], 0),
    "2 ep, 32 px, other seed": (["proxy.epochs=2", "proxy.resolution=32"], 1000),
    "2 ep, 32 px, lr 0.01": (["proxy.epochs=2", "proxy.resolution=32", "proxy.lr=0.01"], 0),
    "1 ep, 32 px": (["proxy.epochs=1", "proxy.resolution=32"], 0),
    "4 ep, 16 px": (["proxy.epochs=4", "proxy.resolution=16"], 0),
    "2 ep, 16 px": (["proxy.epochs=2", "proxy.resolution=16"], 0),
    "1 ep, 16 px": (["proxy.epochs=1", "proxy.resolution=16"], 0),
    "4 ep, 32 px, half data": (["proxy.epochs=4", "proxy.resolution=32", "proxy.subset=0.5"], 0),
    "4 ep, 32 px, width x0.5": (["proxy.epochs=4", "proxy.resolution=32", "proxy.width_scale=0.5"], 0),
}
ZERO_COST = ("synflow", "grad_norm", "naswot")

LONG_SEED, LONG_OFFSET = "long, other seed", 5000  # the reference's second seed (folded into "long")

_COMMON: list = []  # per process: space, mflops, out folder, --set overrides (see _worker_init)
_SEARCHERS: dict[tuple, object] = {}  # per process: setting overrides -> Searcher (data loaded once)


def searcher_config(space: str, mflops: float, overrides: list[str]):
    """The search configuration every run of this benchmark composes, with `overrides`."""
    from nas.cli.search import precheck

    return precheck([f"+space={space}", f"+budget.mflops={mflops}", "wandb.mode=disabled", "reference=false",
                     *overrides])


def searcher(overrides: list[str]):
    if tuple(overrides) not in _SEARCHERS:
        from nas.common.tracking import Tracker
        from nas.search.evaluate import ProxyData
        from nas.search.loop import Searcher
        from nas.search.run import apply_space_overrides

        space, mflops, out, extra = _COMMON
        cfg = searcher_config(space, mflops, [f"hydra.run.dir={out}", *extra, *overrides])
        tracker = Tracker("disabled", "nas", None, "fidelity", out)
        space = apply_space_overrides(cfg)
        _SEARCHERS[tuple(overrides)] = Searcher(cfg, space, None, ProxyData(cfg, space), tracker)
    return _SEARCHERS[tuple(overrides)]


def _worker_init(space: str, mflops: float, out: Path, extra: list[str]) -> None:
    from nas.search.loop import set_threads

    _COMMON[:] = [space, mflops, out, extra]
    set_threads(1)


def measure(job: dict) -> tuple[str, int, float, float]:
    """One genotype under one setting: (setting, index, accuracy or score, seconds)."""
    s = searcher(job["overrides"])
    g = job["genotype"]
    start = time.perf_counter()
    if job["zero_cost"]:
        value = s.zero_cost(g, job["zero_cost"])
    else:
        value = s.train(g, seed=job["seed"]).accuracy
    return job["name"], job["index"], float(value), time.perf_counter() - start


def load_reference(args) -> dict:
    """Genotypes, two-seed accuracies and data settings of a bench_task.py result; sets the
    arguments they fix (space, budget, epochs, seed) and adds its data overrides to --set."""
    from bench_task import applies

    path = Path(args.reference)
    try:
        task = json.loads(path.read_text())
        datasets = list(task["results"])
        dataset = args.dataset or datasets[0]
        if dataset not in task["results"]:
            print(f"error: --dataset {dataset!r} is not in {path}; it holds {', '.join(datasets)}",
                  file=sys.stderr)
            sys.exit(2)
        r, targs = task["results"][dataset], task["args"]
        overrides = [s for s in task["overrides"] if s.startswith("data.") and applies(s, dataset)]
        ref = {"file": path.name, "dataset": dataset, "overrides": overrides,
               "genotypes": [g for _, g in task["genotypes"]], "seeds": [r["seed0"], r["seed1"]],
               "values": r["means"], "seconds": [r["seconds_per_training"]] * len(r["means"])}
        args.space, args.mflops, args.long_epochs = targs["space"], targs["mflops"], targs["epochs"]
        args.seed = targs["seed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: --reference {path} is not a bench_task.py task.json ({exc})", file=sys.stderr)
        sys.exit(2)
    args.set = [f"data={dataset}", *overrides, *args.set]
    return ref


def rescored(args, reference: dict) -> dict:
    """The proxies' results of the fidelity.json `args.rescore` (all but its reference), after
    checking that it ran on the reference's genotypes and on the same data settings (as the
    search composes them, so a default given explicitly is the same setting)."""
    from dataclasses import asdict

    path = Path(args.rescore)
    try:
        earlier = json.loads(path.read_text())
        genotypes, results, sets = earlier["genotypes"], earlier["results"], earlier["set"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: --rescore {path} is not a bench_proxy_fidelity.py fidelity.json ({exc})",
              file=sys.stderr)
        sys.exit(2)
    if genotypes != reference["genotypes"]:
        print(f"error: --rescore {path} ranked other genotypes than --reference {args.reference}",
              file=sys.stderr)
        sys.exit(2)
    then = asdict(searcher_config(args.space, args.mflops, sets).data)
    now = asdict(searcher_config(args.space, args.mflops, args.set).data)
    differ = sorted(k for k in now if then.get(k) != now[k])
    if differ:
        print(f"error: --rescore {path} ran on other data than --reference {args.reference}: "
              + ", ".join(f"data.{k}={then.get(k)!r} there, {now[k]!r} here" for k in differ),
              file=sys.stderr)
        sys.exit(2)
    return {name: r for name, r in results.items() if name != "long"}


def bootstrap_tau(values: list[float], truth: list[float], n: int = 1000, seed: int = 0):
    """5th and 95th percentiles of Kendall's tau over genotype resamples."""
    from nas.common.stats import bootstrap

    return bootstrap(values, truth, n=n, seed=seed)


def plot(payload: dict, path: Path) -> None:
    """Scatter of every training proxy's accuracy against the long run's, one trace each
    (click the legend to hide some); the default proxy when the run was made comes first."""
    import plotly.graph_objects as go

    results, truth = payload["results"], payload["results"]["long"]["values"]
    taus = {row["proxy"]: row["tau"] for row in payload["table"]}
    trained = [n for n in results if n != "long" and n not in ZERO_COST]
    trained.sort(key=lambda n: n != payload["default"])
    fig = go.Figure()
    for name in trained:
        fig.add_trace(go.Scatter(x=truth, y=results[name]["values"], mode="markers",
                                 name=f"{name} (tau {taus[name]:.2f})", text=payload["genotypes"]))
    fig.update_layout(title=f"{payload['space']} under {payload['mflops']:g} MFLOPs: proxy accuracy vs "
                            f"{payload['long_epochs']}-epoch accuracy ({payload['m']} genotypes)",
                      xaxis_title=f"accuracy after {payload['long_epochs']} epochs",
                      yaxis_title="proxy accuracy")
    fig.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--mflops", type=float, default=300)
    ap.add_argument("--m", type=int, default=16, help="genotypes")
    ap.add_argument("--long-epochs", type=int, default=12,
                    help="epochs of the reference runs, at 32 px (with the rest of bench_task.py's "
                         "reference recipe)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="training processes, one thread each")
    ap.add_argument("--only", action="append", default=[], metavar="SETTING",
                    help="run only these proxy settings (repeatable); the long run always runs")
    ap.add_argument("--out", default="fidelity", help="folder for fidelity.json and fidelity.html")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a search override for every run, e.g. --set space.width=[0.5]")
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw fidelity.html from the fidelity.json in --out, run nothing")
    ap.add_argument("--reference", metavar="TASK_JSON",
                    help="a bench_task.py result: its genotypes, two-seed accuracies and data settings "
                         "are the reference (--space, --mflops, --m, --long-epochs and --seed come from it)")
    ap.add_argument("--dataset", default=None,
                    help="with --reference: which of its datasets (default: its first)")
    ap.add_argument("--rescore", metavar="FIDELITY_JSON",
                    help="with --reference: rank the proxies of an earlier fidelity.json (the same "
                         "genotypes, on the same data) against this reference instead of running them")
    args = ap.parse_args()
    if args.rescore and not args.reference:
        print("error: --rescore needs --reference (the reference to rank its proxies against)",
              file=sys.stderr)
        sys.exit(2)
    if args.plot_only:
        source = Path(args.out) / "fidelity.json"
        if not source.is_file():
            print(f"error: --plot-only needs {source}, which does not exist", file=sys.stderr)
            sys.exit(2)
        plot(json.loads(source.read_text()), Path(args.out) / "fidelity.html")
        print(f"wrote {Path(args.out) / 'fidelity.html'}")
        return
    unknown = [name for name in args.only if name not in SETTINGS and name not in ZERO_COST]
    if unknown:
        print(f"error: unknown setting {unknown[0]!r}; valid: {', '.join([*SETTINGS, *ZERO_COST])}",
              file=sys.stderr)
        sys.exit(2)

    from bench_task import recipe_for
    from scipy.stats import kendalltau, spearmanr

    from nas.arch.cost import cost
    from nas.arch.genotype import parse

    reference = load_reference(args) if args.reference else None
    earlier = rescored(args, reference) if args.rescore else None  # refused before anything is written
    recipe = []
    if not reference:  # the long runs train with bench_task's reference recipe, on the same data
        named = [s.split("=", 1)[1] for s in args.set if s.startswith("data=")]
        recipe = recipe_for(named[-1] if named else "digits", args.set)
        args.set = [*args.set, *(r for r in recipe if r.startswith("data."))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = (args.space, args.mflops, out, args.set)
    _worker_init(*common)
    base = searcher([])
    if reference:
        genotypes = [parse(g) for g in reference["genotypes"]]
        args.m = len(genotypes)
    else:
        rng = random.Random(args.seed)
        genotypes = []
        while len(genotypes) < args.m:
            g = base.space.sample(rng)
            if cost(g, base.num_classes, base.in_channels).mflops <= args.mflops:
                genotypes.append(g)
    default = f"{base.cfg.proxy.epochs} ep, {base.cfg.proxy.resolution} px"
    source = (f"reference: {args.reference} ({reference['dataset']}, 2 seeds)" if reference else
              "reference: 2 seeds")
    print(f"{args.m} {args.space} genotypes under {args.mflops} MFLOPs; long run "
          f"{args.long_epochs} epochs at 32 px, {source}; {base.cfg.data.name} data; "
          f"{args.jobs} processes", flush=True)

    long = [f"proxy.epochs={args.long_epochs}", "proxy.resolution=32",
            *(r for r in recipe if not r.startswith("data."))]
    runs = {} if reference else {"long": (long, 0, None), LONG_SEED: (long, LONG_OFFSET, None)}
    for name, (overrides, offset) in SETTINGS.items():
        if not args.only or name in args.only:
            runs[name] = (overrides, offset, None)
    for name in ZERO_COST:
        if not args.only or name in args.only:
            runs[name] = ([], 0, name)
    if earlier is not None:  # nothing to run: the earlier file's proxies, every one of them
        runs = {name: None for name in earlier}
    jobs = [] if earlier is not None else [
        {"name": name, "index": i, "genotype": g, "overrides": overrides, "zero_cost": zc,
         "seed": args.seed + offset + i}
        for name, (overrides, offset, zc) in runs.items() for i, g in enumerate(genotypes)]
    results = earlier or {name: {"values": [None] * args.m, "seconds": [None] * args.m} for name in runs}
    # Every finished job is appended to a journal in --out; a rerun with the same arguments
    # skips what it holds, so an interrupted hour is not lost.
    journal = out / "fidelity.partial.jsonl"
    keys = {json.dumps([j["name"], j["index"], str(j["genotype"]), j["seed"], j["overrides"],
                        j["zero_cost"], args.set]): j for j in jobs}
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when the run was killed
            job = keys.pop(rec["key"], None)
            if job is not None:
                results[job["name"]]["values"][job["index"]] = rec["value"]
                results[job["name"]]["seconds"][job["index"]] = rec["seconds"]
        if len(keys) < len(jobs):
            print(f"resuming: {len(jobs) - len(keys)} of {len(jobs)} jobs already in {journal}",
                  flush=True)
    started = time.perf_counter()
    done = len(jobs) - len(keys)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=common) as pool, journal.open("a") as log:
        # the long runs are submitted first, so the slowest jobs do not end up alone on one core
        futures = {pool.submit(measure, j): key for key, j in keys.items()}
        for fut in as_completed(futures):
            name, i, value, seconds = fut.result()
            results[name]["values"][i], results[name]["seconds"][i] = value, seconds
            log.write(json.dumps({"key": futures[fut], "value": value, "seconds": seconds}) + "\n")
            log.flush()
            done += 1
            if all(v is not None for v in results[name]["values"]):
                per = sum(results[name]["seconds"]) / args.m
                print(f"  {name}: {per:.2f} s per genotype ({done}/{len(jobs)} jobs, "
                      f"{time.perf_counter() - started:.0f} s)", flush=True)

    if reference:
        results["long"] = {"values": reference["values"], "seconds": reference["seconds"],
                           "seeds": reference["seeds"]}
    else:
        other = results.pop(LONG_SEED)
        seeds = [results["long"]["values"], other["values"]]
        results["long"] = {"values": [(a + b) / 2 for a, b in zip(*seeds, strict=True)],
                           "seconds": [(a + b) / 2 for a, b in zip(results["long"]["seconds"],
                                                                   other["seconds"], strict=True)],
                           "seeds": seeds}
    truth = results["long"]["values"]
    seed_tau = float(kendalltau(*results["long"]["seeds"]).statistic)
    seed_interval = bootstrap_tau(*results["long"]["seeds"], seed=args.seed)
    rows = []
    for name, r in results.items():
        if name == "long":
            continue
        tau = float(kendalltau(r["values"], truth).statistic)
        rho = float(spearmanr(r["values"], truth).statistic)
        low, high = bootstrap_tau(r["values"], truth, seed=args.seed)
        per = sum(r["seconds"]) / len(r["seconds"])
        rows.append({"proxy": name, "tau": tau, "tau_90": [low, high], "rho": rho, "seconds": per})
    long_s = sum(results["long"]["seconds"]) / args.m
    print(f"\nranking vs the long run ({args.long_epochs} epochs, mean of 2 seeds, {long_s:.1f} s per "
          f"genotype and seed); current default: {default}")
    print(f"{'reference, seed 0 vs 1':<26}{seed_tau:>7.3f}"
          f"{f'[{seed_interval[0]:.2f}, {seed_interval[1]:.2f}]':>18}")
    print(f"{'proxy':<26}{'tau':>7}{'tau 90% interval':>18}{'rho':>7}{'s/genotype':>12}{'tau per s':>11}")
    for r in rows:
        low, high = r["tau_90"]
        print(f"{r['proxy']:<26}{r['tau']:>7.3f}{f'[{low:.2f}, {high:.2f}]':>18}{r['rho']:>7.3f}"
              f"{r['seconds']:>12.2f}{r['tau'] / r['seconds']:>11.3f}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    payload = {"space": args.space, "mflops": args.mflops, "m": args.m,
               "long_epochs": args.long_epochs, "default": default, "jobs": args.jobs,
               "data": base.cfg.data.name, "set": args.set,
               "reference": ({k: reference[k] for k in ("file", "dataset", "overrides")}
                             if reference else None),
               "rescored_from": Path(args.rescore).name if args.rescore else None,
               "reference_seed_tau": seed_tau, "reference_seed_tau_90": list(seed_interval),
               "wall_seconds": time.perf_counter() - started,
               "genotypes": [str(g) for g in genotypes], "results": results, "table": rows}
    (out / "fidelity.json").write_text(json.dumps(payload, indent=2))

    plot(payload, out / "fidelity.html")
    print(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.html'}")


if __name__ == "__main__":
    main()
