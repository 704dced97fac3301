"""`python -m nas.cost`: params and MFLOPs of a genotype or a space's reference network,
with a per-part breakdown and the space's exact cost range."""

from __future__ import annotations

from typing import Any

from nas.arch.cost import Cost, cost
from nas.arch.genotype import Genotype
from nas.common.config import CostRunConfig, data_shape

__all__ = ["main"]


def _table(genotype: Genotype, result: Cost) -> str:
    rows = [("part", "params", "MACs", "output")]
    for part in result.parts:
        rows.append((part.name, f"{part.params:,}", f"{part.macs:,}",
                     f"{part.out_channels}x{part.out_size}x{part.out_size}"))
    rows.append(("total", f"{result.params:,}", f"{result.macs:,}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"genotype  {genotype}", f"hash      {genotype.content_hash}", ""]
    for j, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                     f"{row[3]}".rstrip())
        if j == 0 or j == len(rows) - 2:
            lines.append("-" * (sum(widths) + 6 + widths[3]))
    lines.append(f"params {result.params_m:.3f} M   MFLOPs (MACs) {result.mflops:.3f}")
    return "\n".join(lines)


USAGE = "usage: python -m nas.cost +space=NAME | +genotype=STRING_OR_YAML [key=value ...]"
SHAPED = ("digits", "cluttered_digits", "cifar10")  # the datasets whose shape needs no folder


def _shape(args: CostRunConfig) -> tuple[int, int, str]:
    """Classes, channels and where they come from: the data named, the keys given, or ImageNet's."""
    from nas.cli.common import UsageError

    shape, source = {"num_classes": 1000, "in_channels": 3}, "ImageNet's, as in the papers' tables"
    if args.data is not None:
        if args.data not in SHAPED:
            raise UsageError(f"data={args.data!r} is not valid; valid: {', '.join(SHAPED)} (for an image "
                             "folder give num_classes= and in_channels=)")
        shape, source = data_shape({"name": args.data}), f"data={args.data}"
    if args.num_classes is not None or args.in_channels is not None:
        source = "as given"
    return (shape["num_classes"] if args.num_classes is None else args.num_classes,
            shape["in_channels"] if args.in_channels is None else args.in_channels, source)


def _genotype(args: CostRunConfig) -> tuple[Genotype, Any]:
    """The genotype reported (with width/resolution overrides) and its space, if one was named."""
    from dataclasses import replace

    from nas.arch.genotype import load_genotype
    from nas.cli.common import UsageError

    if (args.space is None) == (args.genotype is None):
        raise UsageError("give either +space=NAME (mnv2, xception, mnv1: its reference network and the "
                         "space summary) or +genotype=STRING_OR_YAML" + (", not both" if args.space else ""))
    space = None
    if args.space is not None:
        from search_spaces import get_space

        space = get_space(args.space)
        genotype = space.reference
    else:
        genotype = load_genotype(args.genotype)
    if args.width is not None:
        genotype = replace(genotype, width=args.width)
    if args.resolution is not None:
        genotype = replace(genotype, resolution=args.resolution)
    return genotype, space


def _space_summary(space, num_classes: int, in_channels: int) -> dict[str, Any]:
    ranges = space.cost_range(num_classes, in_channels)
    return {"space": space.name, "description": space.description, "size": space.size(),
            "mflops_min": ranges["macs"][0] / 1e6, "mflops_max": ranges["macs"][1] / 1e6,
            "params_m_min": ranges["params"][0] / 1e6, "params_m_max": ranges["params"][1] / 1e6}


def main(argv: list[str]) -> int:
    import json

    from nas.cli.common import UsageError, parse_command, wants_help
    from nas.common.schema import help_text

    if wants_help(argv):
        print(help_text(CostRunConfig, USAGE))
        return 0
    if not argv:
        raise UsageError("give +space=NAME (mnv2, xception, mnv1) or +genotype=STRING_OR_YAML "
                         "(python -m nas.cost --help lists the keys)")
    args = parse_command(CostRunConfig, argv, "nas.cost")
    if args.format not in ("table", "json"):
        raise UsageError(f"format={args.format!r} is not valid; valid: table, json")
    num_classes, in_channels, source = _shape(args)
    genotype, space = _genotype(args)
    result = cost(genotype, num_classes, in_channels, breakdown=True)
    summary = None if space is None else _space_summary(space, num_classes, in_channels)
    if args.format == "json":
        out = {"genotype": str(genotype), "hash": genotype.content_hash,
               "params": result.params, "macs": result.macs, "mflops": result.mflops,
               "parts": [p._asdict() for p in result.parts], "space": summary}
        print(json.dumps(out, indent=2))
        return 0
    print(_table(genotype, result))
    print(f"for {num_classes} classes and {in_channels} input channel(s) ({source}; the search "
          "costs a genotype for its data: give data=NAME or num_classes= in_channels= to match)")
    if summary:
        print(f"\nspace {summary['space']}: {summary['description']}")
        print(f"  {summary['size']:.3e} distinct genotypes; MFLOPs {summary['mflops_min']:.2f} "
              f"to {summary['mflops_max']:.2f}; params {summary['params_m_min']:.2f} M to "
              f"{summary['params_m_max']:.2f} M ({num_classes} classes)")
    return 0


if __name__ == "__main__":
    from nas.cli.common import run

    run(main)
