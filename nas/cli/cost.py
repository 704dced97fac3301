"""`python -m nas.cost`: params and MFLOPs of a genotype or a space's reference network,
with a per-part breakdown and the space's exact cost range."""

from __future__ import annotations

from nas.arch.cost import Cost, cost
from nas.arch.genotype import Genotype
from nas.common.config import data_shape

__all__ = ["main"]


_ARGS = {
    "space": "report a search space (mnv2, xception, mnv1) and its reference network",
    "genotype": "report one genotype: a genotype string or a path to a genotype.yaml",
    "width": "override the width multiplier of the reported genotype",
    "resolution": "override the input resolution of the reported genotype",
    "data": "take classes and channels from a dataset the search uses: digits, cluttered_digits (10 "
            "classes, 1 channel) or cifar10 (10, 3)",
    "num_classes": "classifier outputs (default 1000, ImageNet's, as in the papers' tables)",
    "in_channels": "input channels (default 3)",
    "format": "table (default) or json",
}


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


def main(argv: list[str]) -> int:
    import json
    from dataclasses import replace

    from nas.arch.genotype import load_genotype
    from nas.cli.common import UsageError, parse_float, parse_int, parse_overrides, print_usage

    if not argv:
        raise UsageError("give +space=NAME (mnv2, xception, mnv1) or +genotype=STRING_OR_YAML "
                         "(python -m nas.cost --help lists the keys)")
    if argv[0] in ("-h", "--help"):
        print_usage("usage: python -m nas.cost +space=NAME | +genotype=STRING_OR_YAML [key=value ...]",
                    _ARGS)
        return 0
    args = parse_overrides(argv, _ARGS)
    fmt = args.get("format", "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"format={fmt!r} is not valid; valid: table, json")
    shape, source = {"num_classes": 1000, "in_channels": 3}, "ImageNet's, as in the papers' tables"
    if "data" in args:
        named = ("digits", "cluttered_digits", "cifar10")  # the datasets whose shape needs no folder
        if args["data"] not in named:
            raise UsageError(f"data={args['data']!r} is not valid; valid: {', '.join(named)} (for an image "
                             "folder give num_classes= and in_channels=)")
        shape, source = data_shape({"name": args["data"]}), f"data={args['data']}"
    num_classes = parse_int("num_classes", args.get("num_classes", str(shape["num_classes"])), 1, 1_000_000)
    in_channels = parse_int("in_channels", args.get("in_channels", str(shape["in_channels"])), 1, 4096)
    if "num_classes" in args or "in_channels" in args:
        source = "as given"
    if "space" in args and "genotype" in args:
        raise UsageError("give either +space=NAME (its reference network and the space summary) or "
                         "+genotype=STRING_OR_YAML, not both")
    space = None
    if "space" in args:
        from search_spaces import get_space

        space = get_space(args["space"])
        genotype = space.reference
    if "genotype" in args:
        genotype = load_genotype(args["genotype"])
    elif space is None:
        raise UsageError("give +space=NAME (mnv2, xception, mnv1) or +genotype=STRING_OR_YAML")
    if "width" in args:
        genotype = replace(genotype, width=parse_float("width", args["width"]))
    if "resolution" in args:
        genotype = replace(genotype, resolution=parse_int("resolution", args["resolution"]))
    result = cost(genotype, num_classes, in_channels, breakdown=True)
    summary = None
    if space is not None:
        ranges = space.cost_range(num_classes, in_channels)
        summary = {"space": space.name, "description": space.description, "size": space.size(),
                   "mflops_min": ranges["macs"][0] / 1e6, "mflops_max": ranges["macs"][1] / 1e6,
                   "params_m_min": ranges["params"][0] / 1e6,
                   "params_m_max": ranges["params"][1] / 1e6}
    if fmt == "json":
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
