"""Search efficiency: best proxy accuracy vs trained trials, per sampler, averaged over seeds.

    python scripts/bench_search.py                                     # mnv2 under 300 MFLOPs
    python scripts/bench_search.py --space mnv1 --mflops 28 --trials 30 --seeds 3 \\
        --set proxy.epochs=2 --set proxy.resolution=16 --set 'space.width=[0.25]'

Every method gets the same budget, proxy and number of trained trials (so the same training
compute; the zero-cost pre-filter only adds the scoring of the candidates it skips):
TPE, random sampling, NSGA-II, and TPE with a SynFlow pre-filter. The space's reference
network at every width multiplier that fits the budget is trained with the same proxy and
marked. Prints the mean (and min-max over seeds) best accuracy after 25/50/100% of the
trials, and writes `search.json` and the plot `search.html` into --out.
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

METHODS = {
    "tpe": ["sampler=tpe"],
    "random": ["sampler=random"],
    "nsga2": ["sampler=nsga2"],
    "tpe + synflow pre-filter": ["sampler=tpe", "proxy.prefilter=synflow"],
}


def best_curve(study) -> list[float]:
    """Best accuracy so far after each trained trial (in the order they were trained)."""
    done = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("status") in ("trained", "pruned")]
    best, curve = float("-inf"), []
    for t in sorted(done, key=lambda t: t.number):
        if t.user_attrs.get("status") == "trained":
            best = max(best, t.user_attrs["accuracy"])
        curve.append(best)
    return curve


def one_search(common: list[str], overrides: list[str], seed: int, run_dir: str) -> list[float]:
    """One seeded search in its own SQLite study; its best-so-far curve."""
    import optuna

    from nas.cli.search import precheck
    from nas.search.loop import set_threads
    from nas.search.run import run_search

    set_threads(1)
    name = f"bench-{Path(run_dir).name}"
    cfg = precheck([*common, *overrides, f"seed={seed}", f"study_name={name}"])
    run_search(cfg, Path(run_dir))  # its progress lines: logged, and shown by nothing here
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(run_dir) / 'study.db'}")
    return best_curve(study)


def one_reference(common: list[str], width: float, out: str) -> dict | None:
    """The space's reference network at `width`, trained with the same proxy (None: over budget)."""
    from nas.arch.cost import cost
    from nas.cli.search import precheck
    from nas.common.tracking import Tracker
    from nas.search.evaluate import ProxyData
    from nas.search.loop import Searcher, set_threads
    from nas.search.run import apply_space_overrides

    set_threads(1)
    cfg = precheck(common)
    space = apply_space_overrides(cfg)
    tracker = Tracker("disabled", "nas", None, "bench", Path(out))
    s = Searcher(cfg, space, None, ProxyData(cfg, space), tracker)
    g = replace(space.reference, width=width)
    c = cost(g, s.num_classes, s.in_channels)
    if c.mflops > cfg.budget["mflops"]:
        return None
    acc = s.train(g, seed=0).accuracy
    return {"width": g.width, "mflops": c.mflops, "accuracy": acc, "space": space.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--mflops", type=float, default=300)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="searches run at once, one process and one thread each")
    ap.add_argument("--out", default="search-bench")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a search override for every run, e.g. --set proxy.epochs=2")
    args = ap.parse_args()

    from nas.cli.search import precheck

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"+space={args.space}", f"+budget.mflops={args.mflops}", f"n_trials={args.trials}",
              "wandb.mode=disabled", "reference=false", "pruner=none", *args.set]
    precheck(common)  # bad overrides fail here, once, before any process starts
    started = time.perf_counter()
    curves: dict[str, list[list[float]]] = {m: [None] * args.seeds for m in METHODS}
    references = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {}
        for method, overrides in METHODS.items():
            for seed in range(args.seeds):
                run_dir = out / f"{method.split()[0]}{'-pf' if 'pre-filter' in method else ''}-{seed}"
                futures[pool.submit(one_search, common, overrides, seed, str(run_dir))] = (method, seed)
        for width in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
            futures[pool.submit(one_reference, common, width, str(out))] = ("reference", width)
        for fut in as_completed(futures):
            method, seed = futures[fut]
            elapsed = time.perf_counter() - started
            if method == "reference":
                ref = fut.result()
                if ref is not None:
                    references.append(ref)
                    print(f"reference {ref['space']} width {ref['width']}: {ref['mflops']:.1f} MFLOPs, "
                          f"accuracy {ref['accuracy']:.4f} ({elapsed:.0f} s)", flush=True)
                continue
            curves[method][seed] = fut.result()[: args.trials]
            print(f"{method:<26} seed {seed}: best {curves[method][seed][-1]:.4f} ({elapsed:.0f} s)",
                  flush=True)
    references.sort(key=lambda r: r["width"])

    marks = sorted({max(1, args.trials // 4), max(1, args.trials // 2), args.trials})
    print(f"\nbest proxy accuracy after n trained trials (mean over {args.seeds} seeds, [min, max]):")
    print(f"{'method':<26}" + "".join(f"{'n=' + str(n):>22}" for n in marks))
    table = []
    for method, runs in curves.items():
        cells = []
        for n in marks:
            vals = [r[n - 1] for r in runs]
            cells.append((statistics.fmean(vals), min(vals), max(vals)))
        table.append({"method": method, "at": dict(zip(map(str, marks), cells, strict=True))})
        print(f"{method:<26}" + "".join(f"{m:>8.4f} [{lo:.3f},{hi:.3f}]" for m, lo, hi in cells))
    for ref in references:
        print(f"{'reference w' + str(ref['width']):<26}{ref['accuracy']:>8.4f} ({ref['mflops']:.1f} MFLOPs)")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    settings = {k: v for k, v in vars(args).items() if k != "out"}  # no machine paths in the data
    (out / "search.json").write_text(json.dumps({"args": settings, "curves": curves, "table": table,
                                                 "references": references}, indent=2))

    import plotly.graph_objects as go

    fig = go.Figure()
    for method, runs in curves.items():
        mean = [statistics.fmean(r[i] for r in runs) for i in range(min(map(len, runs)))]
        fig.add_trace(go.Scatter(x=list(range(1, len(mean) + 1)), y=mean, mode="lines", name=method))
    for ref in references:
        fig.add_hline(y=ref["accuracy"], line_dash="dot",
                      annotation_text=f"reference w{ref['width']} ({ref['mflops']:.0f} MFLOPs)")
    fig.update_layout(title=f"{args.space} under {args.mflops} MFLOPs: best proxy accuracy "
                            f"(mean of {args.seeds} seeds)",
                      xaxis_title="trained trials", yaxis_title="best proxy accuracy so far")
    fig.write_html(out / "search.html", include_plotlyjs="cdn")
    print(f"wrote {out / 'search.json'} and {out / 'search.html'}")


if __name__ == "__main__":
    main()
