"""Decoding images on the fly: does the loader keep up with a proxy training step, and does a
worker's memory stay flat as the folder grows?

    python scripts/bench_data.py                  # 20,000 JPEGs, a minute or two on 2 cores
    python scripts/bench_data.py --images 2000 --sizes 1000,2000 --batches 10

Generates small JPEGs (48-80 px, noise plus a shape coloured by class, 10 classes) in a temporary
folder, then prints
  index   the time `index_folder` takes over the folder;
  loader  images/s the training loader produces (imagenet recipe at --resolution, batch 64) at each
          worker count, over --batches batches after 2 warm-up batches (worker start-up included
          in the warm-up);
  step    images/s one SGD step of a model sampled from the mnv2 space consumes at the same batch
          size and resolution (median of 10 steps, --threads torch threads): the baseline each
          loader figure is set against;
  memory  after a full pass over data sets of each --sizes, the peak RSS (VmHWM) and private memory
          of every worker process and the RSS of the main process. A forked worker's RSS counts the
          parent's pages it maps, so the private figure is the one that would grow if the worker
          copied per-image state.
The loader and the step are measured one at a time; in training they share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from nas.model.builder import build_model
from nas.training.folders import index_folder
from nas.training.images import FolderDataset
from nas.training.loaders import make_loader
from nas.training.transforms import build_transform
from search_spaces import get_space

BATCH = 64
WARMUP = 2
CLASSES = 10
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def generate(root: Path, n: int, seed: int = 0) -> None:
    """n JPEGs spread evenly over CLASSES folders."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class_{c}").mkdir(parents=True)
    for i in range(n):
        c = i % CLASSES
        w, h = (int(v) for v in rng.integers(48, 81, 2))
        pixels = rng.normal(128, 40, (h, w, 3)).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        box = (x0, y0, x0 + int(rng.integers(w // 4, w // 2)), y0 + int(rng.integers(h // 4, h // 2)))
        draw = ImageDraw.Draw(img)
        if c % 3 == 0:
            draw.ellipse(box, fill=PALETTE[c])
        elif c % 3 == 1:
            draw.rectangle(box, fill=PALETTE[c])
        else:
            draw.chord(box, 0, 180, fill=PALETTE[c])
        img.save(root / f"class_{c}" / f"{i:07d}.jpg", quality=90)


def loader_rate(dataset: FolderDataset, workers: int, batches: int) -> float:
    """Images/s the training loader yields after WARMUP batches."""
    loader = make_loader(dataset, BATCH, train=True, num_workers=workers, persistent_workers=False, seed=0)
    it = iter(loader)
    for _ in range(WARMUP):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return batches * BATCH / seconds


def step_rate(resolution: int, steps: int = 10) -> tuple[float, float]:
    """(median seconds, images/s) of one SGD step on a BATCH x 3 x resolution^2 batch."""
    model = build_model(get_space("mnv2").sample(seed=0), num_classes=CLASSES, in_channels=3).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 3, resolution, resolution)
    y = torch.randint(0, CLASSES, (BATCH,))
    times = []
    for k in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if k >= 2:  # the first steps allocate and warm caches
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, BATCH / median


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def private_kb(pid: int) -> int:
    """Memory only this process maps (Private_Clean + Private_Dirty), in kB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def worker_pids() -> list[int]:
    """The DataLoader workers among this process's children (psutil when installed, else /proc)."""
    try:
        import psutil

        children = [p.pid for p in psutil.Process().children()]
    except ImportError:
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:  # the process ended while we looked
                continue
            # the command name may hold spaces and parentheses: the parent pid follows the last ')'
            if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
                children.append(int(entry))

    def comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    workers = [pid for pid in children if comm(pid) == "pt_data_worker"]  # the name PyTorch gives them
    return sorted(workers or children)


def memory_pass(dataset: FolderDataset, workers: int) -> dict:
    """Peak and private memory of the workers after one full pass (persistent workers stay up)."""
    loader = make_loader(dataset, BATCH, train=True, num_workers=workers, persistent_workers=True, seed=0)
    batches = sum(1 for _ in loader)
    pids = worker_pids()
    figures = {
        "images": len(dataset),
        "batches": batches,
        "worker_hwm_mb": [proc_status(pid)["VmHWM"] / 1024 for pid in pids],
        "worker_private_mb": [private_kb(pid) / 1024 for pid in pids],
        "main_rss_mb": proc_status(os.getpid())["VmRSS"] / 1024,
    }
    del loader  # shuts the workers down
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000, help="images to generate (at least max of --sizes)")
    ap.add_argument("--sizes", default="5000,20000", help="data set sizes for the memory pass")
    ap.add_argument("--workers", default="0,1,2", help="worker counts for the loader figures")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per loader figure")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the main process (0: all cores; 1 is proxy.threads' default)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folder")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    n = max(args.images, *sizes)
    if args.threads:
        torch.set_num_threads(args.threads)
    if n // BATCH < WARMUP + args.batches:
        sys.exit(f"--images {n} gives {n // BATCH} batches of {BATCH}; the loader figures need "
                 f"{WARMUP + args.batches} (lower --batches or raise --images)")

    root = Path(tempfile.mkdtemp(prefix="nas-bench-data-"))
    figures: dict = {"images": n, "resolution": args.resolution, "batch": BATCH,
                     "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        start = time.perf_counter()
        generate(root, n)
        print(f"generated {n} JPEGs in {time.perf_counter() - start:.1f} s ({root})", flush=True)

        start = time.perf_counter()
        index = index_folder(root)
        figures["index_s"] = time.perf_counter() - start
        print(f"index    {figures['index_s'] * 1e3:8.1f} ms for {len(index)} files "
              f"({figures['index_s'] / len(index) * 1e6:.1f} s per million)", flush=True)

        transform = build_transform("imagenet", True, args.resolution, (0.5,) * 3, (0.25,) * 3)
        dataset = FolderDataset.from_index(index, transform)
        figures["loader_img_s"] = {}
        for w in workers:
            figures["loader_img_s"][w] = loader_rate(dataset, w, args.batches)
            print(f"loader   {figures['loader_img_s'][w]:8.0f} images/s with {w} workers", flush=True)

        seconds, rate = step_rate(args.resolution)
        figures["step_s"], figures["step_img_s"] = seconds, rate
        print(f"step     {rate:8.0f} images/s consumed ({seconds * 1e3:.0f} ms per step of {BATCH}, "
              f"{torch.get_num_threads()} torch threads)")
        for w in workers:
            ratio = figures["loader_img_s"][w] / rate
            print(f"         {w} workers produce {ratio:5.1f}x what the step consumes")

        mem_workers = max(1, *workers)
        rng = np.random.default_rng(0)
        figures["memory"] = []
        for size in sizes:
            chosen = np.sort(rng.choice(len(index), size, replace=False))
            subset = dataset.subset(chosen).with_transform(transform)
            m = memory_pass(subset, mem_workers)
            figures["memory"].append(m)
            print(f"memory   {size:7d} images, {mem_workers} workers: worker peak RSS "
                  f"{', '.join(f'{v:.0f}' for v in m['worker_hwm_mb'])} MB, private "
                  f"{', '.join(f'{v:.1f}' for v in m['worker_private_mb'])} MB; main RSS "
                  f"{m['main_rss_mb']:.0f} MB", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
