"""How far does the weight-sharing supernet rank networks like stand-alone training, and how
much cheaper is a candidate?

    python scripts/bench_supernet.py                        # mnv2 under 300 MFLOPs, cluttered digits
    python scripts/bench_supernet.py --n 12 --epochs 12 --supernet-epochs 20 \
        --set data.n_train=4000 --set data.n_val=1000 --set 'space.width=[0.5,0.75,1.0]'

Two processes of one thread each run side by side: `python -m nas.supernet train` (its wall
time and peak memory are measured), and, here, `--n` random genotypes within `--mflops` trained
stand-alone for `--epochs` (the supernet's recipe, as `nas.supernet validate` trains them) and
with the `--proxy-epochs` proxy, each timed. Then every genotype is scored by the supernet
(extract, BN re-estimated, validation accuracy), timed. Prints Kendall tau and Spearman rho of
the supernet and of the proxy against the stand-alone accuracy, with 90% bootstrap intervals,
and the seconds per candidate of each. `--search-trials N` then runs a supernet search of N
candidates (`nas.search ... proxy=supernet`) and reports its seconds per candidate.

With `--reference task.json` (a `bench_task.py` result) no genotype is trained stand-alone:
its genotypes and the mean of its two seeds' reference-recipe accuracies are the truth, and its
data settings are the supernet's. `--fidelity` (a `bench_proxy_fidelity.py` result on the same
genotypes) gives the default 2-epoch proxy's accuracies; `--proxy-timed K` of its trials are
timed here, in the same process as the supernet's candidates (the cost ratio). Every genotype is
scored on the whole validation split and on fixed subsets of it (`--val-images`), each timed.
`--supernet FILE` scores an existing supernet (its training's wall time and peak memory are
read from `--supernet-record`, a JSON of wall_s, peak_rss_mb, epochs). `--probe N` also scores,
on N fixed validation images, the supernet's teacher (its largest subnet within the budget)
and every genotype one gene away from it (a stage's n, k, t, act, place or shortcut; the width,
stem, head, resolution), and prints the accuracies per gene: which genes' choices inherit
working weights.

The supernet trains subnets within --mflops (`supernet.mflops`) unless --set gives another.
Finished trainings are kept in `standalone.jsonl` and the supernet in `supernet.pt` under --out
(rerunning resumes); the report is `supernet_bench.json`. Accuracies are validation accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mnv2")
    p.add_argument("--data", default="cluttered_digits")
    p.add_argument("--mflops", type=float, default=300.0, help="the genotypes' budget")
    p.add_argument("--n", type=int, default=12, help="genotypes trained stand-alone")
    p.add_argument("--epochs", type=int, default=20, help="their stand-alone training")
    p.add_argument("--proxy-epochs", type=int, default=2)
    p.add_argument("--supernet-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="which genotypes")
    p.add_argument("--search-trials", type=int, default=0, help="then a supernet search of N candidates")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the data, space or supernet recipe (repeatable)")
    p.add_argument("--out", default="bench-supernet")
    p.add_argument("--standalone-only", action="store_true",
                   help="a helper: train stand-alone genotypes of --out beside its main process, then stop")
    p.add_argument("--supernet-elsewhere", action="store_true",
                   help="do not train the supernet here: wait for supernet_train.json in --out")
    p.add_argument("--reference", help="a bench_task.py task.json: its genotypes and two-seed accuracies "
                                       "are the stand-alone truth, its data settings the supernet's")
    p.add_argument("--dataset", default="cluttered_digits", help="which of --reference's datasets")
    p.add_argument("--fidelity", help="with --reference: a bench_proxy_fidelity.py result on the same "
                                      "genotypes (the default proxy's accuracies)")
    p.add_argument("--proxy-setting", help="with --fidelity: which of its proxies (default: its default one)")
    p.add_argument("--proxy-timed", type=int, default=3, help="with --reference: proxy trials timed here")
    p.add_argument("--val-images", default="0,1000,500,250",
                   help="with --reference: validation images a candidate is scored on (0: all), each tried")
    p.add_argument("--supernet", help="with --reference: score this supernet file instead of training one")
    p.add_argument("--supernet-record", help="with --supernet: its training's wall_s, peak_rss_mb, epochs")
    p.add_argument("--probe", type=int, default=0, metavar="N",
                   help="with --reference: score the teacher's one-gene neighbours on N val images")
    return p.parse_args()


def start_supernet(args: argparse.Namespace, overrides: list[str], path: Path,
                   out: Path) -> subprocess.Popen:
    within = [] if any(o.startswith("supernet.mflops=") for o in overrides) else [
        f"supernet.mflops={args.mflops:g}"]
    cmd = [sys.executable, "-m", "nas.supernet", "train", *overrides, *within,
           f"supernet.epochs={args.supernet_epochs}", "supernet.threads=1", "supernet.progress=false",
           f"out={path}", f"hydra.run.dir={out / 'supernet'}", "wandb.mode=disabled"]
    log = open(out / "supernet.log", "a")  # noqa: SIM115 - the child writes it until it ends
    print("supernet:", " ".join(cmd[1:]), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "WANDB_MODE": "disabled"})


def train_standalone(cfg, space, picks, args, partial: Path) -> tuple[list[dict], list[str]]:
    """The first `args.n` genotypes of `picks` whose trainings stay finite, each trained for the
    proxy's and for the stand-alone epochs (kept in `partial`); and those that diverged. Several
    processes given the same --out share the work (each claims a genotype before training it)."""
    from nas.training.data import datamodule_for
    from nas.training.proxy import NonFiniteLoss
    from nas.training.supernet import reference_trainings, standalone_recipe

    def finished() -> dict[str, dict]:
        found = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
        return {r["genotype"]: r for r in found}

    claims = partial.parent / "claims"
    claims.mkdir(exist_ok=True)
    recipe = standalone_recipe(cfg.supernet)
    start = time.perf_counter()
    while True:
        done = finished()
        good = [g for g in picks if str(g) in done and "diverged" not in done[str(g)]]
        open_ = [g for g in picks if str(g) not in done and not (claims / g.content_hash).exists()]
        in_flight = len(picks) - len(done) - len(open_)
        if len(good) >= args.n:
            break
        if len(good) + in_flight >= args.n or not open_:
            time.sleep(10)  # enough genotypes are being trained by other processes
            continue
        g = open_[0]
        try:
            os.close(os.open(claims / g.content_hash, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        i = picks.index(g)
        res = cfg.supernet.resolution_for(g.resolution, space.reference.resolution)
        dm = datamodule_for(cfg.data, res, cfg.supernet.batch_size)
        dm.setup()
        row = {"genotype": str(g), "resolution": res}
        try:
            row.update(reference_trainings(g, dm, (("proxy", args.proxy_epochs), ("standalone", args.epochs)),
                                           recipe, args.seed + i))
        except NonFiniteLoss as err:  # this recipe does not train it: reported, replaced by the next
            row["diverged"] = str(err).split(";")[0]
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
        state = (f"diverged ({row['diverged']})" if "diverged" in row else
                 f"proxy {row['proxy']:.4f} ({row['proxy_s']:.0f}s), stand-alone {row['standalone']:.4f} "
                 f"({row['standalone_s']:.0f}s)")
        print(f"[{time.perf_counter() - start:6.0f}s] genotype {i + 1} {g}: {state}", flush=True)
    done = finished()
    rows, diverged = [], []
    for g in picks:
        row = done.get(str(g))
        if len(rows) == args.n or row is None:
            break
        (diverged if "diverged" in row else rows).append(row)
    return rows, [r["genotype"] for r in diverged]


def score(cfg, space, rows: list[dict], path: Path) -> None:
    """The supernet's score of each genotype, and the seconds it took (added to `rows`)."""
    from nas.arch.genotype import parse
    from nas.training.data import datamodule_for
    from nas.training.supernet import data_identity, load_supernet, score_subnet

    net, meta = load_supernet(path, space, data_identity(cfg.data))
    net.eval()
    dm = datamodule_for(cfg.data, meta.top_resolution(space), meta.recipe["batch_size"])
    dm.setup()
    t0 = time.perf_counter()
    bn_images = meta.bn_images(dm)
    setup_s = time.perf_counter() - t0
    for row in rows:
        g = parse(row["genotype"])
        t0 = time.perf_counter()
        row["supernet"] = score_subnet(net, g, meta.resolution(g, space), bn_images, dm.val_dataloader())
        row["supernet_s"] = time.perf_counter() - t0
    print(f"scored {len(rows)} subnets ({setup_s:.1f} s to draw the BN images once)", flush=True)


def search(args, overrides: list[str], path: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "nas.search", *[o for o in overrides if not o.startswith("supernet.")],
           f"+budget.mflops={args.mflops:g}", "proxy=supernet", f"proxy.supernet={path}",
           f"n_trials={args.search_trials}", "proxy.threads=1", "reference=false",
           f"hydra.run.dir={out / 'search'}", "wandb.mode=disabled"]
    print("search:", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "disabled"})
    wall = time.perf_counter() - t0
    (out / "search.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        sys.exit(f"the supernet search failed (exit {run.returncode}); see {out / 'search.log'}")
    trials = [t for t in json.loads((out / "search" / "trials.json").read_text())["trials"]
              if t["state"] == "COMPLETE" and t["accuracy"] is not None]
    best = max(trials, key=lambda t: t["accuracy"])
    return {"trials": len(trials), "wall_s": wall, "s_per_candidate": wall / max(1, len(trials)),
            "trial_seconds": sum(t["seconds"] for t in trials) / max(1, len(trials)),
            "best": {k: best[k] for k in ("accuracy", "mflops", "params_m", "genotype")}}


def refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_reference(args: argparse.Namespace) -> tuple[list[str], list[dict], dict]:
    """Data overrides and rows (label, genotype, stand-alone two-seed mean and seeds) of a
    bench_task.py result (sets --space and --mflops from it), and what its truth was; with
    --fidelity, each row's default-proxy accuracy and seconds."""
    from bench_task import applies

    path = Path(args.reference)
    try:
        task = json.loads(path.read_text())
        if args.dataset not in task["results"]:
            refuse(f"--dataset {args.dataset!r} is not in {path}; it holds {', '.join(task['results'])}")
        r = task["results"][args.dataset]
        # The data it was measured on (its genotypes come from the space as registered).
        overrides = [o for o in task["overrides"] if o.startswith("data.") and applies(o, args.dataset)]
        rows = [{"label": label, "genotype": g, "standalone": mean, "standalone_seeds": [a, b]}
                for (label, g), mean, a, b in zip(task["genotypes"], r["means"], r["seed0"], r["seed1"],
                                                  strict=True)]
        args.space, args.mflops = task["args"]["space"], float(task["args"]["mflops"])
        truth = {"file": path.name, "dataset": args.dataset, "epochs": task["args"]["epochs"],
                 "seconds_per_training": r["seconds_per_training"], "tau_seeds": r["tau_seeds"],
                 "tau_seeds_interval": r["tau_interval"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        refuse(f"--reference {path} is not a bench_task.py task.json ({type(exc).__name__}: {exc})")
    if args.fidelity:
        path = Path(args.fidelity)
        try:
            fid = json.loads(path.read_text())
            if fid["genotypes"] != [row["genotype"] for row in rows] or fid["data"] != args.dataset:
                refuse(f"--fidelity {path} measured other genotypes or data than --reference "
                       f"{args.reference}")
            setting = args.proxy_setting or fid["default"]
            if setting not in fid["results"]:
                refuse(f"--proxy-setting {setting!r} is not in {path}; it holds {', '.join(fid['results'])}")
            default = fid["results"][setting]
            for row, value, seconds in zip(rows, default["values"], default["seconds"], strict=True):
                row["proxy"], row["proxy_s"] = value, seconds
            truth["proxy"] = {"file": path.name, "setting": setting}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            refuse(f"--fidelity {path} is not a bench_proxy_fidelity.py result ({type(exc).__name__}: {exc})")
    return [f"data={args.dataset}", *overrides], rows, truth


def score_at(net, meta, space, rows: list[dict], dm, n_images: int) -> str:
    """Every row scored by the supernet on `n_images` fixed validation images (0: all), timed
    per candidate; returns the key it is stored under."""
    from nas.arch.genotype import parse
    from nas.training.supernet import score_subnet

    key = "supernet" if n_images == 0 else f"supernet_{n_images}"
    bn_images, val = meta.bn_images(dm), meta.val_images(dm, n_images)
    for row in rows:
        g = parse(row["genotype"])
        t0 = time.perf_counter()
        row[key] = score_subnet(net, g, meta.resolution(g, space), bn_images, val)
        row[f"{key}_s"] = time.perf_counter() - t0
    return key


def neighbours(space, g, max_mflops: float | None, num_classes: int,
               in_channels: int) -> list[tuple[str, object]]:
    """(gene, genotype) for every genotype of `space` within `max_mflops` one gene away from `g`:
    one stage's gene or one global gene at another of its choices."""
    from dataclasses import replace

    from nas.arch.genes import GenotypeError
    from nas.training.supernet import within

    seen = {str(g)}

    def fits(other) -> bool:
        # a choice a stage normalizes away (the placement of an expansion t=1 drops) is no neighbour
        if str(other) in seen or not space.contains(other):
            return False
        seen.add(str(other))
        return within(other, max_mflops, num_classes, in_channels)

    found = []
    for i, choices in enumerate(space.stages):
        for gene in ("n", "k", "t", "act", "place", "residual"):
            for value in getattr(choices, gene, ()):
                if value == getattr(g.stages[i], gene):
                    continue
                stages = list(g.stages)
                try:
                    stages[i] = replace(stages[i], **{gene: value})
                    other = replace(g, stages=tuple(stages))
                except (GenotypeError, ValueError):
                    continue
                if fits(other):
                    found.append((gene, other))
    for gene in ("width", "resolution", "stem", "head"):
        for value in getattr(space, gene):
            if value != getattr(g, gene):
                try:
                    other = replace(g, **{gene: value})
                except (GenotypeError, ValueError):
                    continue
                if fits(other):
                    found.append((gene, other))
    return found


def probe(net, meta, space, dm, n_images: int) -> dict:
    """The teacher, the smallest subnet and the teacher's one-gene neighbours scored on
    `n_images` validation images: per gene, the min / mean / max accuracy of its neighbours."""
    import statistics

    from nas.training.supernet import score_subnet, teacher_within

    budget = meta.recipe.get("mflops")
    teacher = teacher_within(space, budget, meta.num_classes, meta.in_channels)
    bn_images, val = meta.bn_images(dm), meta.val_images(dm, n_images)

    def acc(g) -> float:
        return score_subnet(net, g, meta.resolution(g, space), bn_images, val)

    result = {"images": n_images, "teacher": str(teacher), "teacher_acc": acc(teacher),
              "smallest_acc": acc(space.extreme(False)), "genes": {}}
    by_gene: dict[str, list[float]] = {}
    for gene, g in neighbours(space, teacher, budget, meta.num_classes, meta.in_channels):
        by_gene.setdefault(gene, []).append(acc(g))
    within = f" within {budget:g} MFLOPs" if budget else ""
    print(f"\nthe teacher and its one-gene neighbours{within} ({n_images} val images): teacher "
          f"{result['teacher_acc']:.3f}, smallest subnet {result['smallest_acc']:.3f}")
    for gene, accs in by_gene.items():
        result["genes"][gene] = {"n": len(accs), "min": min(accs), "mean": statistics.fmean(accs),
                                 "max": max(accs)}
        print(f"  {gene:10} {len(accs):3d} neighbours: min {min(accs):.3f}  mean {statistics.fmean(accs):.3f}"
              f"  max {max(accs):.3f}", flush=True)
    return result


def time_proxy(overrides: list[str], rows: list[dict], k: int, mflops: float, space: str,
               out: Path) -> list[float]:
    """Seconds of `k` of the rows' default 2-epoch proxy trials, run here as a search runs them."""
    from bench_task import _searcher

    from nas.arch.genotype import parse

    searcher = _searcher(space, mflops, str(out / "proxy"), tuple(overrides))
    seconds = []
    for row in rows[:k]:
        t0 = time.perf_counter()
        searcher.train(parse(row["genotype"]), seed=0)
        seconds.append(time.perf_counter() - t0)
        print(f"  proxy trial {len(seconds)}/{k}: {seconds[-1]:.1f} s", flush=True)
    return seconds


def reference_main(args: argparse.Namespace) -> None:
    """--reference: the supernet against a bench_task.py truth (see the module's docstring)."""
    import statistics

    from nas.cli.supernet import precheck
    from nas.common.config import ConfigError
    from nas.search.run import apply_space_overrides
    from nas.training.data import datamodule_for
    from nas.training.supernet import SupernetError, agreement, data_identity, load_supernet

    data, rows, truth = load_reference(args)
    try:
        sizes = sorted({int(v) for v in args.val_images.split(",")}, key=lambda v: (v != 0, -v))
    except ValueError:
        refuse(f"--val-images {args.val_images!r} is not a comma-separated list of image counts (0: all)")
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    # --set proxy.* is the timed proxy trials' (a search's key), supernet.* the supernet's.
    overrides = [f"+space={args.space}", *data, *(o for o in args.set if not o.startswith("proxy."))]
    proxy_overrides = [*data, *(o for o in args.set if not o.startswith("supernet."))]
    try:
        cfg = precheck([*overrides, f"supernet.epochs={args.supernet_epochs}"])
    except ConfigError as err:
        refuse(str(err))
    space = apply_space_overrides(cfg)
    if args.supernet:
        path = Path(args.supernet).absolute()
        try:
            trained = json.loads(Path(args.supernet_record).read_text()) if args.supernet_record else {}
        except (OSError, ValueError) as exc:
            refuse(f"--supernet-record {args.supernet_record} is not a JSON record ({exc})")
    else:
        path, record = out / "supernet.pt", out / "supernet_train.json"
        if not record.exists():
            child, t0 = start_supernet(args, overrides, path, out), time.perf_counter()
            _, status, usage = os.wait4(child.pid, 0)
            if status != 0:
                sys.exit(f"the supernet training failed (status {status}); see {out / 'supernet.log'}")
            record.write_text(json.dumps({"wall_s": time.perf_counter() - t0, "epochs": args.supernet_epochs,
                                          "peak_rss_mb": usage.ru_maxrss / 1024}))
        trained = json.loads(record.read_text())
    try:
        net, meta = load_supernet(path, space, data_identity(cfg.data))
    except SupernetError as err:
        refuse(str(err))
    net.eval()
    from nas.arch.genotype import parse

    outside = [row["label"] for row in rows if not space.contains(parse(row["genotype"]))]
    if outside:  # e.g. MobileNetV2 x0.35: a width the space does not offer
        print(f"not in the supernet's space, left out: {', '.join(outside)}", flush=True)
        rows = [row for row in rows if row["label"] not in outside]
    dm = datamodule_for(cfg.data, meta.top_resolution(space), meta.recipe["batch_size"])
    dm.setup()
    keys = [score_at(net, meta, space, rows, dm, n) for n in sizes]
    proxy_s = time_proxy(proxy_overrides, rows, args.proxy_timed, args.mflops, args.space, out)
    report = {"space": args.space, "data": args.dataset, "mflops": args.mflops, "n": len(rows),
              "reference": truth, "supernet_file": str(path), "supernet_recipe": meta.recipe,
              "supernet_epochs": meta.epochs, "supernet_training": trained, "rows": rows,
              "proxy_timed_s": proxy_s, "left_out": outside}
    if args.probe > 0:
        report["probe"] = probe(net, meta, space, dm, args.probe)
    print(f"\n{args.space} within {args.mflops:g} MFLOPs on {args.dataset}: {len(rows)} genotypes of "
          f"{truth['file']} ({truth['epochs']}-epoch stand-alone, mean of 2 seeds; the seeds agree at tau "
          f"{truth['tau_seeds']:.3f}); supernet {meta.epochs} epochs"
          + (f" in {trained['wall_s'] / 60:.1f} min, peak {trained['peak_rss_mb']:.0f} MB"
             if trained else ""))
    print("agreement with the stand-alone accuracy (90% bootstrap intervals):")
    proxy_trial = statistics.fmean(proxy_s) if proxy_s else None
    report["per_candidate"] = {}
    for key in [*keys, *(["proxy"] if "proxy" in rows[0] else [])]:
        report[key] = a = agreement(rows, key, seed=0)
        seconds = statistics.fmean(r[f"{key}_s"] for r in rows)
        label = (f"proxy {truth['proxy']['setting']} ({truth['proxy']['file']})" if key == "proxy" else
                 "supernet, all val images" if key == "supernet" else
                 f"supernet, {key.split('_')[1]} val images")
        ratio = proxy_trial / seconds if proxy_trial and key != "proxy" else None
        report["per_candidate"][key] = {"seconds": seconds, "ratio": ratio}
        tau, rho = a["tau_interval"], a["rho_interval"]
        print(f"  {label:44} tau {a['kendall_tau']:+.3f} [{tau[0]:+.2f}, {tau[1]:+.2f}]  rho "
              f"{a['spearman_rho']:+.3f} [{rho[0]:+.2f}, {rho[1]:+.2f}]  {seconds:6.2f} s per candidate"
              + (f"  {ratio:6.0f}x cheaper than a proxy trial" if ratio else ""))
    if proxy_trial:
        print(f"  ({len(proxy_s)} default proxy trials timed here: {proxy_trial:.1f} s each)")
    (out / "supernet_bench.json").write_text(json.dumps(report, indent=2))
    print(f"written to {out / 'supernet_bench.json'}")


def main() -> None:
    args = parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    if args.reference:
        torch.set_num_threads(1)
        reference_main(args)
        return

    from nas.cli.supernet import precheck
    from nas.common.config import ConfigError
    from nas.search.run import apply_space_overrides
    from nas.training.data import datamodule_for
    from nas.training.supernet import agreement, pick_subnets

    torch.set_num_threads(1)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"+space={args.space}", f"data={args.data}", *args.set]
    try:
        cfg = precheck([*overrides, f"supernet.epochs={args.supernet_epochs}"])
    except ConfigError as err:
        sys.exit(f"error: {err}")
    space = apply_space_overrides(cfg)
    probe = datamodule_for(cfg.data, 32, cfg.supernet.batch_size)
    probe.setup()
    # Twice as many as needed, in a fixed order: a genotype whose training diverges is replaced.
    picks = pick_subnets(space, 2 * args.n, args.seed, args.mflops, probe.num_classes, probe.in_channels)
    path = out / "supernet.pt"
    record = out / "supernet_train.json"
    if args.standalone_only:
        train_standalone(cfg, space, picks, args, out / "standalone.jsonl")
        return
    child = None
    if not record.exists() and not args.supernet_elsewhere:
        child, t0 = start_supernet(args, overrides, path, out), time.perf_counter()
    rows, diverged = train_standalone(cfg, space, picks, args, out / "standalone.jsonl")
    while not record.exists() and child is None:  # trained by another process: it writes the record
        print("waiting for the supernet record ...", flush=True)
        time.sleep(60)
    if child is not None:
        print("waiting for the supernet ...", flush=True)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            sys.exit(f"the supernet training failed (status {status}); see {out / 'supernet.log'}")
        record.write_text(json.dumps({"wall_s": time.perf_counter() - t0,
                                      "peak_rss_mb": usage.ru_maxrss / 1024, "epochs": args.supernet_epochs}))
    trained = json.loads(record.read_text())
    score(cfg, space, rows, path)
    report = {"space": args.space, "data": args.data, "mflops": args.mflops, "n": args.n,
              "epochs": args.epochs, "proxy_epochs": args.proxy_epochs, "overrides": args.set,
              "supernet_training": trained, "rows": rows, "diverged": diverged}
    per = {key: sum(r[f"{key}_s"] for r in rows) / len(rows) for key in ("supernet", "proxy", "standalone")}
    report["seconds_per_candidate"] = per
    print(f"\n{args.space} within {args.mflops:g} MFLOPs on {args.data}: {args.n} genotypes; supernet "
          f"{args.supernet_epochs} epochs in {trained['wall_s'] / 60:.1f} min, "
          f"peak {trained['peak_rss_mb']:.0f} MB")
    print(f"agreement with the {args.epochs}-epoch stand-alone accuracy (90% bootstrap intervals):")
    for key in ("supernet", "proxy"):
        report[key] = a = agreement(rows, key, seed=args.seed)
        label = "supernet (inherited)" if key == "supernet" else f"{args.proxy_epochs}-epoch proxy"
        tau, rho = a["tau_interval"], a["rho_interval"]
        print(f"  {label:22} tau {a['kendall_tau']:+.3f} [{tau[0]:+.2f}, {tau[1]:+.2f}]"
              f"  rho {a['spearman_rho']:+.3f} [{rho[0]:+.2f}, {rho[1]:+.2f}]"
              f"  {per[key]:7.2f} s per candidate")
    if diverged:
        print(f"  ({len(diverged)} genotype(s) drawn diverged in stand-alone training and were replaced)")
    print(f"  a candidate scored by the supernet is {per['proxy'] / per['supernet']:.0f}x cheaper than a "
          f"{args.proxy_epochs}-epoch proxy trial (stand-alone {per['standalone']:.0f} s)")
    if args.search_trials:
        report["search"] = s = search(args, overrides, path, out)
        print(f"supernet search: {s['trials']} candidates in {s['wall_s'] / 60:.1f} min "
              f"({s['s_per_candidate']:.2f} s each with the search's overhead, {s['trial_seconds']:.2f} s "
              f"scoring); best {s['best']['accuracy']:.4f} at {s['best']['mflops']:.1f} MFLOPs")
    (out / "supernet_bench.json").write_text(json.dumps(report, indent=2))
    print(f"written to {out / 'supernet_bench.json'}")


if __name__ == "__main__":
    main()
