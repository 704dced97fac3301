"""Proxy fidelity: do cheap proxies rank genotypes like a long training run does?

    python scripts/bench_proxy_fidelity.py                          # mnv2 under 300 MFLOPs, M=16
    python scripts/bench_proxy_fidelity.py --mflops 100 --long-factor 5 --m 12

Draws M random genotypes of a space under an MFLOPs budget, trains each with a long
schedule (`--long-factor` x the default proxy's epochs) and with each cheap proxy setting,
and scores each with the zero-cost proxies (synflow, grad_norm, naswot). Prints, per
proxy, Kendall's tau and Spearman's rho of its ranking against the long run's and its
seconds per genotype; writes `fidelity.json` and a scatter plot `fidelity.html` (default
proxy accuracy vs long-run accuracy) into --out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> proxy overrides on top of the defaults in conf/proxy/default.yaml
SETTINGS = {
    "default (4 ep, 32 px)": [],
    "2 epochs": ["proxy.epochs=2"],
    "1 epoch": ["proxy.epochs=1"],
    "4 ep, 16 px": ["proxy.resolution=16"],
    "4 ep, half data": ["proxy.subset=0.5"],
}


EXTRA: list[str] = []  # --set overrides, applied under every setting's own


def searcher(space: str, mflops: float, overrides: list[str], out: Path):
    from nas.runner import Searcher
    from nas.search import apply_space_overrides, precheck
    from nas.tracking import Tracker

    cfg = precheck([f"+space={space}", f"+budget.mflops={mflops}", "wandb.mode=disabled",
                    "reference=false", f"hydra.run.dir={out}", *EXTRA, *overrides])
    tracker = Tracker("disabled", "nas", None, "fidelity", out)
    return Searcher(cfg, apply_space_overrides(cfg), None, out, tracker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--mflops", type=float, default=300)
    ap.add_argument("--m", type=int, default=16, help="genotypes")
    ap.add_argument("--long-factor", type=int, default=10, help="long run = this x the default epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fidelity", help="folder for fidelity.json and fidelity.html")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a search override for every run, e.g. --set space.width=[0.5]")
    args = ap.parse_args()
    EXTRA.extend(args.set)

    import torch
    from scipy.stats import kendalltau, spearmanr

    from nas.cost import cost
    from nas.runner import set_threads

    set_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = searcher(args.space, args.mflops, [], out)
    rng = random.Random(args.seed)
    genotypes = []
    while len(genotypes) < args.m:
        g = base.space.sample(rng)
        if cost(g, base.num_classes, base.in_channels).mflops <= args.mflops:
            genotypes.append(g)
    long_epochs = base.cfg.proxy.epochs * args.long_factor
    print(f"{args.m} random {args.space} genotypes under {args.mflops} MFLOPs; long run "
          f"{long_epochs} epochs; {base.cfg.data.name} data", flush=True)

    results: dict[str, dict] = {}

    def run(name: str, overrides: list[str], zero_cost: str | None = None) -> None:
        s = searcher(args.space, args.mflops, overrides, out)
        values, seconds = [], []
        for i, g in enumerate(genotypes):
            start = time.perf_counter()
            if zero_cost:
                values.append(s.zero_cost(g, zero_cost))
            else:
                values.append(s.train(g, seed=args.seed + i).accuracy)
            seconds.append(time.perf_counter() - start)
        results[name] = {"values": values, "seconds": seconds}
        print(f"  {name}: {sum(seconds) / len(seconds):.2f} s per genotype", flush=True)

    run("long", [f"proxy.epochs={long_epochs}"])
    for name, overrides in SETTINGS.items():
        run(name, overrides)
    for name in ("synflow", "grad_norm", "naswot"):
        run(name, [], zero_cost=name)
    torch.set_num_threads(1)

    truth = results["long"]["values"]
    rows = []
    for name, r in results.items():
        if name == "long":
            continue
        tau = kendalltau(r["values"], truth).statistic
        rho = spearmanr(r["values"], truth).statistic
        per = sum(r["seconds"]) / len(r["seconds"])
        rows.append((name, float(tau), float(rho), per))
    long_s = sum(results["long"]["seconds"]) / args.m
    print(f"\nranking vs the long run ({long_epochs} epochs, {long_s:.1f} s per genotype):")
    print(f"{'proxy':<24}{'tau':>7}{'rho':>7}{'s/genotype':>12}{'tau per s':>11}")
    for name, tau, rho, per in rows:
        print(f"{name:<24}{tau:>7.3f}{rho:>7.3f}{per:>12.2f}{tau / per:>11.3f}")
    payload = {"space": args.space, "mflops": args.mflops, "m": args.m, "long_epochs": long_epochs,
               "genotypes": [str(g) for g in genotypes], "results": results,
               "table": [dict(zip(("proxy", "tau", "rho", "seconds"), r, strict=True)) for r in rows]}
    (out / "fidelity.json").write_text(json.dumps(payload, indent=2))

    import plotly.graph_objects as go

    default = results["default (4 ep, 32 px)"]["values"]
    fig = go.Figure(go.Scatter(x=truth, y=default, mode="markers", text=[str(g) for g in genotypes]))
    fig.update_layout(title=f"{args.space}: default proxy vs {long_epochs}-epoch accuracy",
                      xaxis_title=f"accuracy after {long_epochs} epochs",
                      yaxis_title="default proxy accuracy")
    fig.write_html(out / "fidelity.html", include_plotlyjs="cdn")
    print(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.html'}")


if __name__ == "__main__":
    main()
