"""Analytic costing throughput vs building the model and counting with FlopCounterMode.

Prints genotypes/s of `nas.cost.cost` on distinct random genotypes (one thread), the
same for the baseline (build the real model on CPU, run one forward pass under
`FlopCounterMode`), and their ratio, all measured in this run.

    python scripts/bench_cost.py [--space mnv2] [--n 20000] [--baseline-n 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch.cost import cost
from nas.model.builder import build_model
from search_spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--n", type=int, default=20000, help="genotypes costed analytically")
    ap.add_argument("--baseline-n", type=int, default=20, help="genotypes built and counted")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = get_space(args.space)
    genotypes = [space.sample(seed) for seed in range(args.n)]
    print(f"space {args.space}: {len(set(genotypes))} distinct genotypes drawn")

    start = time.perf_counter()
    total = 0
    for g in genotypes:
        total += cost(g).macs
    analytic = time.perf_counter() - start
    rate = args.n / analytic
    print(f"analytic: {args.n} genotypes in {analytic:.3f} s -> {rate:,.0f} genotypes/s "
          f"({analytic / args.n * 1e6:.1f} us each)")

    start = time.perf_counter()
    for g in genotypes[: args.baseline_n]:
        model = build_model(g).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, g.resolution, g.resolution))
        assert counter.get_total_flops() // 2 == cost(g).macs
    baseline = time.perf_counter() - start
    base_rate = args.baseline_n / baseline
    print(f"baseline (build + FlopCounterMode forward, CPU, 1 thread): {args.baseline_n} genotypes "
          f"in {baseline:.2f} s -> {base_rate:.2f} genotypes/s")
    print(f"ratio: analytic is {rate / base_rate:,.0f}x faster")


if __name__ == "__main__":
    main()
