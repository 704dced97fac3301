"""Exact analytic cost of a genotype: parameters and multiply-accumulates, no torch.

MACs count Conv2d and Linear layers only, for one image at the genotype's resolution
(the MobileNet papers' "MAdds"); batch norm, activations, pooling and additions are
free. This equals `torch.utils.flop_counter.FlopCounterMode` total / 2 on the built
model, and `params` equals the sum of `numel()` over its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.genotype import Genotype


@dataclass(frozen=True)
class PartCost:
    """Cost of one named part of the network (stem, a stage, head, classifier)."""

    name: str
    params: int
    macs: int
    out_channels: int
    out_size: int


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    parts: tuple[PartCost, ...] = ()

    @property
    def mflops(self) -> float:
        """Millions of multiply-accumulates (the budget unit)."""
        return self.macs / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def cost(genotype: Genotype, num_classes: int = 1000, in_channels: int = 3,
         breakdown: bool = False) -> Cost:
    """Params and MACs of `genotype` built with `num_classes` outputs and `in_channels` inputs.

    With `breakdown`, `Cost.parts` holds the stem, every stage, the head and the classifier.
    """
    parts: list[PartCost] = []
    h = genotype.resolution
    cin = in_channels
    p_stem = m_stem = 0
    for layer, c in zip(genotype.stem, genotype.stem_channels(), strict=True):
        h = (h + 2 * layer.p - layer.k) // layer.s + 1
        w = cin * c * layer.k * layer.k
        p_stem += w + 2 * c
        m_stem += w * h * h
        cin = c
    if breakdown:
        parts.append(PartCost("stem", p_stem, m_stem, cin, h))
    total_p, total_m = p_stem, m_stem
    stage_p = stage_m = 0
    last_stage = 0
    for spec in genotype.blocks():
        if breakdown and spec.stage != last_stage:
            parts.append(_stage_part(genotype, last_stage, stage_p, stage_m, cin, h))
            stage_p = stage_m = 0
            last_stage = spec.stage
        p, m, h = spec.gene.type.cost(spec.gene, spec.cin, spec.cout, spec.h_in, spec.stride,
                                      spec.shortcut)
        stage_p += p
        stage_m += m
        total_p += p
        total_m += m
        cin = spec.cout
    if breakdown:
        parts.append(_stage_part(genotype, last_stage, stage_p, stage_m, cin, h))
    p_head = m_head = 0
    for layer, c in zip(genotype.head, genotype.head_channels(), strict=True):
        k2 = layer.k * layer.k
        w = cin * c * k2 if layer.kind == "conv" else cin * k2 + cin * c
        p_head += w + 2 * c
        m_head += w * h * h
        cin = c
    p_fc = cin * num_classes + num_classes
    m_fc = cin * num_classes
    if breakdown:
        if genotype.head:
            parts.append(PartCost("head", p_head, m_head, cin, h))
        parts.append(PartCost("classifier", p_fc, m_fc, num_classes, 1))
    return Cost(total_p + p_head + p_fc, total_m + m_head + m_fc, tuple(parts))


def _stage_part(genotype: Genotype, i: int, p: int, m: int, c: int, h: int) -> PartCost:
    st = genotype.stages[i]
    return PartCost(f"stage {i} {st.block} x{st.n}", p, m, c, h)


# ----- command line: python -m nas.cost +space=mnv2 | +genotype=<string or yaml> ----------
_ARGS = {
    "space": "report a search space (mnv2, xception, mnv1) and its reference network",
    "genotype": "report one genotype: a genotype string or a path to a genotype.yaml",
    "width": "override the width multiplier of the reported genotype",
    "resolution": "override the input resolution of the reported genotype",
    "num_classes": "classifier outputs (default 1000, as in the papers' tables)",
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

    from nas.cli import UsageError, parse_float, parse_int, parse_overrides, print_usage
    from nas.genotype import load_genotype

    if not argv or argv[0] in ("-h", "--help"):
        print_usage("usage: python -m nas.cost +space=NAME | +genotype=STRING_OR_YAML [key=value ...]",
                    _ARGS)
        return 0 if argv else 2
    args = parse_overrides(argv, _ARGS)
    fmt = args.get("format", "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"format={fmt!r} is not valid; valid: table, json")
    num_classes = parse_int("num_classes", args.get("num_classes", "1000"))
    in_channels = parse_int("in_channels", args.get("in_channels", "3"))
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
               "parts": [vars(p) for p in result.parts], "space": summary}
        print(json.dumps(out, indent=2))
        return 0
    print(_table(genotype, result))
    if summary:
        print(f"\nspace {summary['space']}: {summary['description']}")
        print(f"  {summary['size']:.3e} distinct genotypes; MFLOPs {summary['mflops_min']:.2f} "
              f"to {summary['mflops_max']:.2f}; params {summary['params_m_min']:.2f} M to "
              f"{summary['params_m_max']:.2f} M ({num_classes} classes)")
    return 0


if __name__ == "__main__":
    from nas.cli import run

    run(main)
