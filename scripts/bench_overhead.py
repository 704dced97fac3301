"""Per-trial overhead of the search vs a plain PyTorch loop, and the cost of a rejection.

For each of N genotypes, in one run and alternating order:
- full trial path: Optuna proposes it, the analytic cost is checked and stored, the model is
  built and trained by the Lightning proxy with pruning reports, the result is recorded;
- baseline: a hand-written loop trains the same genotype on the same batches for the same
  number of steps and evaluates it on the same validation split after every epoch.
Prints both mean wall times and their ratio. Then times proposals rejected by a budget
that nothing meets except by luck.

    python scripts/bench_overhead.py [--n 6] [--space mnv2] [--threads 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import optuna
import torch
from torch.nn import functional as F

from nas.cli.search import precheck
from nas.common.tracking import Tracker
from nas.model.builder import build_model
from nas.model.optim import param_groups
from nas.search.evaluate import ProxyData
from nas.search.loop import Searcher
from nas.search.run import apply_space_overrides


def plain_loop(searcher: Searcher, genotype, seed: int) -> float:
    """Train like the proxy does, with no framework: returns the last validation accuracy."""
    p = searcher.cfg.proxy
    torch.manual_seed(seed)
    model = build_model(replace(genotype, width=genotype.width * p.width_scale),
                        searcher.num_classes, searcher.in_channels)
    dm = searcher.data.for_genotype(genotype)
    opt = torch.optim.SGD(param_groups(model, p.weight_decay), lr=p.lr, momentum=p.momentum,
                          nesterov=True)
    steps = p.epochs * len(dm.train_dataloader())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    acc = 0.0
    for _ in range(p.epochs):
        model.train()
        for x, y in dm.train_dataloader():
            loss = F.cross_entropy(model(x), y, label_smoothing=p.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in dm.val_dataloader():
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        acc = correct / total
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="genotypes timed both ways")
    ap.add_argument("--space", default="mnv2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="search config overrides, e.g. proxy.epochs=2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = precheck([f"+space={args.space}", "+budget.mflops=100000", "wandb.mode=disabled",
                    "pruner=median", "reference=false", *args.overrides])
    space = apply_space_overrides(cfg)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=10**6))
    searcher = Searcher(cfg, space, study, ProxyData(cfg, space), Tracker("disabled", "", None, "bench", "."))
    print(f"proxy: {cfg.proxy.epochs} epochs at {cfg.proxy.resolution}px, batch "
          f"{cfg.proxy.batch_size}, {args.threads} threads; {args.n} genotypes from {args.space}")
    # Warm both paths once (imports, allocator) before timing.
    study.optimize(searcher.objective, n_trials=1)
    plain_loop(searcher, space.reference, 0)

    import random

    ours, base = [], []
    for i in range(args.n):
        rng, params = random.Random(100 + i), {}

        def record(name, options, rng=rng, params=params):
            params[name] = rng.choice(options)
            return params[name]

        g = space.decode(record)
        order = ("ours", "base") if i % 2 == 0 else ("base", "ours")
        for which in order:
            start = time.perf_counter()
            if which == "ours":
                study.enqueue_trial(params)
                study.optimize(searcher.objective, n_trials=1)
                assert study.trials[-1].user_attrs["hash"] == g.content_hash
                ours.append(time.perf_counter() - start)
            else:
                plain_loop(searcher, g, i)
                base.append(time.perf_counter() - start)
    m_ours, m_base = statistics.mean(ours), statistics.mean(base)
    print(f"full trial path: mean {m_ours:.2f} s per trial ({', '.join(f'{t:.1f}' for t in ours)})")
    print(f"plain PyTorch:   mean {m_base:.2f} s per trial ({', '.join(f'{t:.1f}' for t in base)})")
    print(f"overhead ratio (ours / plain): {m_ours / m_base:.3f}")

    # Rejection cost: a budget below everything in the space, with the default TPE sampler,
    # on in-memory storage and on the default SQLite file.
    import tempfile

    from nas.search.study import make_sampler, open_storage

    searcher.cfg = replace(cfg, budget={"mflops": 1e-3})
    with tempfile.TemporaryDirectory() as tmp:
        for label, storage in (("in-memory", None),
                               ("SQLite file", open_storage(f"sqlite:///{tmp}/bench.db"))):
            searcher.study = optuna.create_study(storage=storage, direction="maximize",
                                                 sampler=make_sampler(cfg, 0))
            times = []
            for _ in range(100):
                start = time.perf_counter()
                searcher.study.optimize(searcher.objective, n_trials=1)
                times.append(time.perf_counter() - start)
            rejected = sum(t.user_attrs.get("status") == "rejected" for t in searcher.study.trials)
            print(f"rejection ({label}): {rejected}/100 proposals rejected, mean "
                  f"{statistics.mean(times) * 1e3:.2f} ms, median {statistics.median(times) * 1e3:.2f} "
                  "ms per proposal")


if __name__ == "__main__":
    from nas.search.study import quiet_optuna

    with quiet_optuna():  # the script drives the study itself: no Optuna line per trial
        main()
