"""Which genes can a supernet share in a short training? The same supernet training on the
whole space and on narrowed ones, the subnets a search would score compared.

    python scripts/bench_sharing.py                                  # full, tame, width: 6 epochs each
    python scripts/bench_sharing.py --spaces width --epochs 10 --set data.n_train=5000

For each narrowing of the mnv2 space named in --spaces, trains a supernet (`train_supernet`,
the `supernet.*` defaults, `supernet.mflops` = --mflops, one thread) on cluttered digits and
scores, on fixed validation images, its teacher (the largest subnet within the budget), its
smallest subnet and --n random subnets within the budget (fixed draws): how much of the
teacher's accuracy the subnets a search scores inherit. The narrowings:

- `full`: the space as it is;
- `tame`: no `t=1` (t in {3, 6}), every stage with its shortcut, placement `ed` only;
- `width`: every gene fixed at the full space's teacher (per stage c, n, k, t, act, placement,
  shortcut; stem, head, resolution) but the width: the one elastic gene.

Each narrowing has its own teacher within the budget (for `width` the full space's own). The
supernets are kept under --out/<space> (rerunning scores them again without training);
the report is `sharing.json`. Accuracies are validation accuracies.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACES = ("full", "tame", "width")
DATA = ("data=cluttered_digits", "data.n_train=2000", "data.n_val=500", "data.n_test=100")


def narrowed(name: str, full, teacher):
    """The mnv2 space narrowed as `name` says (SPACES)."""
    if name == "full":
        return full
    if name == "tame":
        return replace(full, stages=tuple(replace(sc, t=(3, 6), residual=(True,), place=("ed",))
                                          for sc in full.stages))
    if name == "width":
        return full.fixed_at(teacher, ("c", "n", "k", "t", "act", "place", "residual", "stem", "head",
                                       "resolution"))
    raise ValueError(f"no narrowing {name!r}; valid: {', '.join(SPACES)}")


def measure(name: str, cfg, full, args, out: Path) -> dict:
    import torch

    from nas.training.data import datamodule_for
    from nas.training.supernet import (
        data_identity,
        load_supernet,
        sample_within,
        score_subnet,
        teacher_within,
        train_supernet,
    )

    space = narrowed(name, full, teacher_within(full, args.mflops, 10, 1))
    torch.set_num_threads(1)
    start = time.perf_counter()
    train_supernet(space, cfg.data, cfg.supernet, cfg.wandb, out / "supernet.pt", out / "run")
    train_s = time.perf_counter() - start
    net, meta = load_supernet(out / "supernet.pt", space, data_identity(cfg.data))
    dm = datamodule_for(cfg.data, meta.top_resolution(space), meta.recipe["batch_size"])
    dm.setup()
    bn, val = meta.bn_images(dm), meta.val_images(dm, args.val_images)

    def score(g) -> float:
        return score_subnet(net, g, meta.resolution(g, space), bn, val)

    teacher = teacher_within(space, args.mflops, net.num_classes, net.in_channels)
    rng = random.Random(args.seed)
    drawn = [sample_within(space, rng, args.mflops, net.num_classes, net.in_channels) for _ in range(args.n)]
    row = {"space": name, "train_s": train_s, "epochs": meta.epochs, "teacher": score(teacher),
           "smallest": score(space.extreme(False)), "random": [score(g) for g in drawn],
           "random_genotypes": [str(g) for g in drawn]}
    if name == "width":
        row["teacher_at_width"] = {str(w): score(replace(teacher, width=w)) for w in space.width}
    row["random_mean"] = sum(row["random"]) / len(row["random"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--epochs", type=int, default=6, help="supernet.epochs")
    ap.add_argument("--mflops", type=float, default=300)
    ap.add_argument("--n", type=int, default=12, help="random subnets within the budget scored")
    ap.add_argument("--val-images", type=int, default=500, help="fixed validation images (0: all)")
    ap.add_argument("--seed", type=int, default=7, help="which random subnets")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides of the data or the supernet recipe, e.g. data.n_train=5000")
    ap.add_argument("--out", default="bench_sharing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from nas.cli.supernet import precheck
    from nas.search.run import apply_space_overrides

    names = args.spaces.split(",")
    for name in names:
        if name not in SPACES:
            ap.error(f"--spaces: {name!r} is not valid; valid: {', '.join(SPACES)}")  # exit 2
    cfg = precheck(["+space=mnv2", *DATA, f"supernet.mflops={args.mflops}", f"supernet.epochs={args.epochs}",
                    "supernet.threads=1", "supernet.progress=false", "wandb.mode=disabled", *args.set])
    full = apply_space_overrides(cfg)
    out = Path(args.out)
    rows = [measure(name, cfg, full, args, out / name) for name in names]
    print(f"{'space':8}{'train s':>9}{'teacher':>9}{'smallest':>10}{'random mean':>13}  random min-max")
    for r in rows:
        print(f"{r['space']:8}{r['train_s']:9.0f}{100 * r['teacher']:8.1f}%{100 * r['smallest']:9.1f}%"
              f"{100 * r['random_mean']:12.1f}%  {100 * min(r['random']):.1f}-{100 * max(r['random']):.1f}%")
        if "teacher_at_width" in r:
            print("         the teacher at each width: " + ", ".join(
                f"{w} {100 * a:.1f}%" for w, a in r["teacher_at_width"].items()))
    payload = {"args": vars(args), "overrides": list(DATA) + args.set, "rows": rows}
    (out / "sharing.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
