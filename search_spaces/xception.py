"""Xception (Chollet, 2017) and a space of separable-convolution networks around it."""

from __future__ import annotations

from nas.arch.genotype import Genotype, HeadLayer, Stage, StemLayer
from nas.arch.space import SearchSpace, StageChoices, scaled_choices

__all__ = ["HEAD", "REFERENCE", "SPACE", "STEM", "TABLE", "reference"]

# Entry flow: two unpadded 3x3 convs, then blocks of 128, 256 and 728 channels; middle
# flow: 8 blocks of 3 separable convs at 728; exit flow: a block to 1024 that grows
# on its last conv, then separable convs to 1536 and 2048.
STEM = (StemLayer(c=32, k=3, s=2, p=0, act="relu"), StemLayer(c=64, k=3, s=1, p=0, act="relu"))
HEAD = (HeadLayer(c=1536, kind="sep", k=3, act="relu"),
        HeadLayer(c=2048, kind="sep", k=3, act="relu"))
# (c, n, s, m, grow, lead_act)
TABLE = ((128, 1, 2, 2, "first", False), (256, 1, 2, 2, "first", True),
         (728, 1, 2, 2, "first", True), (728, 8, 1, 3, "first", True),
         (1024, 1, 2, 2, "last", True))


def reference(width: float = 1.0, resolution: int = 299) -> Genotype:
    """Xception at width multiplier `width` and input `resolution`."""
    stages = tuple(
        Stage("xc", c=c, n=n, s=s, k=3, act="relu", place="i", residual=True, m=m,
              order="dp", grow=grow, lead_act=lead)
        for c, n, s, m, grow, lead in TABLE)
    return Genotype(stages=stages, stem=STEM, head=HEAD, width=width, resolution=resolution,
                    dropout=0.0)


REFERENCE = reference()

SPACE = SearchSpace(
    name="xception",
    description="Xception separable blocks: per stage c, n, k, m, dw/pw order, activation "
                "placement (pre/mid/post), shortcut; global width, resolution, stem, head",
    reference=REFERENCE,
    stages=tuple(
        StageChoices(
            block=("xc",),
            c=scaled_choices(c, (0.5, 1.0)),
            n=(2, 4, 6, 8) if n == 8 else (1,),
            s=(s,),
            k=(3, 5),
            act=("relu",),
            place=("i", "im", "io"),
            residual=(True, False),
            m=(2, 3) if n == 8 else (1, 2),
            order=("dp", "pd"),
            grow=(grow,),
            lead_act=(lead,),
        )
        for c, n, s, m, grow, lead in TABLE
    ),
    stem=(STEM,),
    head=(HEAD, (HeadLayer(c=1024, kind="sep", k=3, act="relu"),)),
    width=(0.25, 0.5, 0.75, 1.0),
    resolution=(128, 160, 224, 299),
    dropout=(0.0,),
)
