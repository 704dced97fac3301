"""`python -m nas.latency build|calibrate|validate|predict +space=NAME`: the per-device latency
lookup table, built, calibrated and checked on the device itself."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from nas.arch import kernels as K
from nas.common.config import LatencyRunConfig
from nas.hardware.latency import (
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


def _space(args: LatencyRunConfig):
    """The space named, narrowed to the widths and resolutions given."""
    from nas.cli.common import UsageError
    from search_spaces import NAMES, get_space

    if args.space is None:
        raise UsageError(f"give +space=NAME; valid: {', '.join(NAMES)}")
    space = get_space(args.space)
    for key in ("width", "resolution"):
        values = getattr(args, key)
        if values is not None:
            if not values:
                raise UsageError(f"{key}=[] is empty: give at least one value, or leave it out")
            space = replace(space, **{key: tuple(values)})
    return space


def _backend(args: LatencyRunConfig):
    return make_backend(args.backend, device=args.device, threads=args.threads,
                        channels_last=args.channels_last, warmup=args.warmup, repeats=args.repeats)


def _build(args: LatencyRunConfig, space, backend, fp, path: Path, argv: list[str]) -> int:
    table = open_table(path, space.name, fp, args.num_classes, args.in_channels, rebuild=True)
    kernels = space_kernels(space, args.num_classes, args.in_channels)
    todo = len(table.missing(kernels))
    print(f"space {space.name}: {len(kernels)} distinct kernels, {len(kernels) - todo} already "
          f"in {path}; measuring {todo} on {fp['name']} with {args.backend} ({args.threads} thread(s))",
          flush=True)
    table.fill(kernels, backend, progress=_progress("kernels"))
    # Calibrated by a process of its own, so that its fresh-process server forks from a
    # process that has not measured thousands of kernels.
    keep = [a for a in argv if a.lstrip("+").split("=")[0] not in ("lut", "dir")]
    return subprocess.run([sys.executable, "-m", "nas.latency", "calibrate", *keep, f"lut={path}"]).returncode


def _calibrate(args: LatencyRunConfig, table, space, backend, path: Path) -> int:
    scales, overhead = calibrate(table, space, args.num_classes, args.in_channels, backend, args.calibration,
                                 progress=_progress("calibration networks (a fresh process each)"))
    terms = " + ".join(f"{v:.3f} x {g}" for g, v in scales.items())
    print(f"calibrated on {args.calibration} networks: predicted = {terms} kernels {overhead:+.3f} ms"
          f"\nwrote {path}")
    return 0


def _predict(args: LatencyRunConfig, table, space, backend, path: Path) -> int:
    from nas.arch.genotype import load_genotype
    from nas.cli.common import UsageError

    if args.genotype is None:
        raise UsageError("predict needs +genotype=STRING_OR_YAML")
    g = load_genotype(args.genotype)
    if (len(g.stages) != len(space.stages)
            or any(st.block not in ch.block for st, ch in zip(g.stages, space.stages, strict=True))):
        raise UsageError(f"the genotype's stages do not match space {space.name} (the space of "
                         f"table {path}): give the space it comes from, +space=NAME")
    ks = K.genotype_kernels(g, args.num_classes, args.in_channels)
    filled = table.fill(ks, backend)
    print(f"predicted {table.predict_kernels(ks):.3f} ms ({len(ks)} kernels, {filled} newly measured)")
    return 0


def _validate(args: LatencyRunConfig, table, space, backend, fp) -> int:
    result = validate(table, space, args.num_classes, args.in_channels, backend, args.n,
                      args.seed, progress=_progress("networks"))
    plot = scatter(result["rows"], Path(args.out),
                   f"{space.name}: predicted vs measured latency ({args.backend}, {fp['name']}, "
                   f"{args.threads} thread(s))")
    print(f"{args.n} random {space.name} genotypes, {args.backend} on {fp['name']}, {args.threads} "
          f"thread(s), each timed in a fresh process:\n"
          f"  within +-10% of measured: {100 * result['within_10pct']:.1f}% (stopwatch noise floor: "
          f"{100 * result['noise_within_10pct']:.1f}% of networks timed twice agree within +-10%)\n"
          f"  MAPE: {100 * result['mape']:.2f}% (mean signed error {100 * result['bias']:+.2f}%; "
          f"timed twice: {100 * result['noise_mape']:.2f}%)\n"
          f"  Kendall tau: {result['kendall_tau']:.3f} (timed twice: {result['noise_kendall_tau']:.3f})\n"
          f"scatter plot: {plot}")
    return 0


def main(argv: list[str]) -> int:
    from nas.cli.common import UsageError, parse_command, wants_help
    from nas.common.schema import help_text

    if wants_help(argv):
        print(help_text(LatencyRunConfig, USAGE))
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}; valid" if argv else "give a command"
        raise UsageError(f"{given}: {', '.join(COMMANDS)} (python -m nas.latency --help lists the keys)")
    command, rest = argv[0], argv[1:]
    # Every value is checked before anything is measured or written.
    args = parse_command(LatencyRunConfig, rest, "nas.latency")
    args.validate(prefix="")
    space = _space(args)
    backend = _backend(args)
    fp = backend.fingerprint()
    path = Path(args.lut) if args.lut else default_table_path(args.dir, space.name, fp)
    _check_table_path(path)
    if command == "build":
        return _build(args, space, backend, fp, path, rest)
    if not path.exists():
        raise LatencyError(f"latency table {str(path)!r} does not exist; build it first: "
                           f"python -m nas.latency build +space={space.name}")
    table = open_table(path, space.name, fp, args.num_classes, args.in_channels, rebuild=args.rebuild)
    if command == "calibrate":
        return _calibrate(args, table, space, backend, path)
    if command == "predict":
        return _predict(args, table, space, backend, path)
    return _validate(args, table, space, backend, fp)


if __name__ == "__main__":
    from nas.cli.common import run

    run(main)
