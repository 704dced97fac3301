"""`python -m nas.latency build|calibrate|validate|predict +space=NAME`: the per-device latency
lookup table, built, calibrated and checked on the device itself."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from nas.arch import kernels as K
from nas.common.config import LIMITS
from nas.hardware.latency import (
    BACKENDS,
    LatencyError,
    _progress,
    calibrate,
    default_table_path,
    make_backend,
    open_table,
    scatter,
    space_kernels,
    validate,
)

__all__ = ["main"]


_ARGS = {
    "space": "search space (mnv2, xception, mnv1)",
    "lut": "table file (default: <dir>/<space>-<device>-<threads>t-<fingerprint>.lut.jsonl)",
    "dir": "folder for default table files (default: luts)",
    "backend": "inference backend timed: torch (PyTorch eager, default) or onnxruntime (CPU)",
    "threads": "intra-op threads while measuring (default 1)",
    "device": "cpu (default) or cuda (torch backend only)",
    "channels_last": "measure in channels-last memory format (default false; torch backend only)",
    "warmup": "untimed calls before timing (default 5)",
    "repeats": "timed calls; the median counts (default 25)",
    "num_classes": "classifier outputs (default 10, as the digits data)",
    "in_channels": "input channels (default 1, as the digits data)",
    "calibration": "random networks timed whole (each in a fresh process) to fit the table's "
                   "scales (default 100)",
    "rebuild": "validate: measure a table afresh when it does not match this device",
    "n": "validate: random genotypes to time, each twice, in fresh processes (default 100)",
    "seed": "validate: seed of the random genotypes (default 0)",
    "out": "validate: scatter plot file (default latency_validation.html)",
    "genotype": "predict: a genotype string or genotype.yaml",
    "width": "only these width multipliers of the space, comma-separated (e.g. 0.5,1.0)",
    "resolution": "only these input resolutions of the space, comma-separated (e.g. 160,224)",
}


COMMANDS = ("build", "calibrate", "validate", "predict")


USAGE = "usage: python -m nas.latency build|calibrate|validate|predict +space=NAME [key=value ...]"


def _check_table_path(path: Path) -> None:
    """A table file can be written at `path`: no file where a folder must be, no folder there."""
    from nas.cli.common import UsageError, cannot_create

    if path.exists() and not path.is_file():
        raise UsageError(f"lut={str(path)!r} is not valid: it is a folder; give a file name (.lut.jsonl)")
    problem = None if path.exists() else cannot_create(path.parent)
    if problem:
        raise UsageError(f"lut={str(path)!r} is not valid: {problem}")


def main(argv: list[str]) -> int:
    from nas.arch.genotype import load_genotype
    from nas.cli.common import UsageError, parse_int, parse_overrides, print_usage

    if not argv:
        raise UsageError(f"give a command: {', '.join(COMMANDS)} (python -m nas.latency --help lists "
                         "the keys)")
    if argv[0] in ("-h", "--help"):
        print_usage(USAGE, _ARGS)
        return 0
    command, args = argv[0], parse_overrides(argv[1:], _ARGS)
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
    if "space" not in args:
        from search_spaces import NAMES

        raise UsageError(f"give +space=NAME; valid: {', '.join(NAMES)}")
    from search_spaces import get_space

    space = get_space(args["space"])
    for key, cast in (("width", float), ("resolution", int)):
        if key in args:
            try:
                values = tuple(cast(v) for v in args[key].split(","))
            except ValueError:
                raise UsageError(f"{key}={args[key]!r} is not a comma-separated list of numbers") from None
            limit = LIMITS[key]
            if any(not limit.holds(v) for v in values):
                raise UsageError(f"{key}={args[key]!r} is not valid: values must be in {limit}")
            space = replace(space, **{key: values})
    device = args.get("device", "cpu")  # checked by the backend's fingerprint
    flag = args.get("channels_last", "false").lower()
    if flag not in ("true", "false"):
        raise UsageError(f"channels_last={flag!r} is not valid; valid: true, false")
    name = args.get("backend", "torch")
    if name not in BACKENDS:
        raise UsageError(f"backend={name!r} is not valid; valid: {', '.join(BACKENDS)}")
    # Every number is checked before anything is measured or written.
    threads = parse_int("threads", args.get("threads", "1"), 1, 1024)
    warmup = parse_int("warmup", args.get("warmup", "5"), 0, 100_000)
    repeats = parse_int("repeats", args.get("repeats", "25"), 1, 100_000)
    num_classes = parse_int("num_classes", args.get("num_classes", "10"), 2, 1_000_000)
    in_channels = parse_int("in_channels", args.get("in_channels", "1"), 1, 4096)
    samples = parse_int("calibration", args.get("calibration", "100"), 3, 100_000)
    n = parse_int("n", args.get("n", "100"), 1, 1_000_000)
    seed = parse_int("seed", args.get("seed", "0"), 0, 2**32 - 1)
    backend = make_backend(name, device=device, threads=threads, channels_last=flag == "true",
                           warmup=warmup, repeats=repeats)
    fp = backend.fingerprint()
    path = Path(args["lut"]) if "lut" in args else default_table_path(args.get("dir", "luts"),
                                                                      space.name, fp)
    _check_table_path(path)
    if command == "build":
        table = open_table(path, space.name, fp, num_classes, in_channels, rebuild=True)
        kernels = space_kernels(space, num_classes, in_channels)
        todo = len(table.missing(kernels))
        print(f"space {space.name}: {len(kernels)} distinct kernels, {len(kernels) - todo} already "
              f"in {path}; measuring {todo} on {fp['name']} with {name} ({threads} thread(s))",
              flush=True)
        table.fill(kernels, backend, progress=_progress("kernels"))
        # Calibrated by a process of its own, so that its fresh-process server forks from a
        # process that has not measured thousands of kernels.
        keep = [a for a in argv[1:] if a.lstrip("+").split("=")[0] not in ("lut", "dir")]
        r = subprocess.run([sys.executable, "-m", "nas.latency", "calibrate", *keep, f"lut={path}"])
        return r.returncode
    if not path.exists():
        raise LatencyError(f"latency table {str(path)!r} does not exist; build it first: "
                           f"python -m nas.latency build +space={space.name}")
    table = open_table(path, space.name, fp, num_classes, in_channels,
                       rebuild=args.get("rebuild", "false").lower() == "true")
    if command == "calibrate":
        scales, overhead = calibrate(table, space, num_classes, in_channels, backend, samples,
                                     progress=_progress("calibration networks (a fresh process each)"))
        terms = " + ".join(f"{v:.3f} x {g}" for g, v in scales.items())
        print(f"calibrated on {samples} networks: predicted = {terms} kernels {overhead:+.3f} ms"
              f"\nwrote {path}")
        return 0
    if command == "predict":
        if "genotype" not in args:
            raise UsageError("predict needs +genotype=STRING_OR_YAML")
        g = load_genotype(args["genotype"])
        if (len(g.stages) != len(space.stages)
                or any(st.block not in ch.block for st, ch in zip(g.stages, space.stages, strict=True))):
            raise UsageError(f"the genotype's stages do not match space {space.name} (the space of "
                             f"table {path}): give the space it comes from, +space=NAME")
        ks = K.genotype_kernels(g, num_classes, in_channels)
        filled = table.fill(ks, backend)
        print(f"predicted {table.predict_kernels(ks):.3f} ms ({len(ks)} kernels, {filled} newly "
              f"measured)")
        return 0
    result = validate(table, space, num_classes, in_channels, backend, n,
                      seed, progress=_progress("networks"))
    plot = scatter(result["rows"], Path(args.get("out", "latency_validation.html")),
                   f"{space.name}: predicted vs measured latency ({name}, {fp['name']}, "
                   f"{threads} thread(s))")
    print(f"{n} random {space.name} genotypes, {name} on {fp['name']}, {threads} thread(s), each "
          f"timed in a fresh process:\n"
          f"  within +-10% of measured: {100 * result['within_10pct']:.1f}% (stopwatch noise floor: "
          f"{100 * result['noise_within_10pct']:.1f}% of networks timed twice agree within +-10%)\n"
          f"  MAPE: {100 * result['mape']:.2f}% (mean signed error {100 * result['bias']:+.2f}%; "
          f"timed twice: {100 * result['noise_mape']:.2f}%)\n"
          f"  Kendall tau: {result['kendall_tau']:.3f} (timed twice: {result['noise_kendall_tau']:.3f})\n"
          f"scatter plot: {plot}")
    return 0


if __name__ == "__main__":
    from nas.cli.common import run

    run(main)
