"""MobileNetV2 (Sandler et al., 2018) and a space of inverted-residual networks around it."""

from __future__ import annotations

from dataclasses import replace

from nas.arch.genotype import Genotype, HeadLayer, Stage, StemLayer
from nas.arch.space import SearchSpace, StageChoices, repeat_choices, scaled_choices

__all__ = ["HEAD", "REFERENCE", "SPACE", "STEM", "TABLE", "reference"]

# (t, c, n, s) rows of the paper's Table 2.
TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

STEM = (StemLayer(c=32, k=3, s=2, p=1, act="relu6"),)
HEAD = (HeadLayer(c=1280, kind="conv", k=1, act="relu6"),)


def reference(width: float = 1.0, resolution: int = 224) -> Genotype:
    """MobileNetV2 at width multiplier `width` and input `resolution`."""
    stages = []
    for t, c, n, s in TABLE:
        # A shortcut exists on every repeat after the first; a single block only
        # gets one when it keeps stride 1 and the channel count (never, in the table).
        stages.append(Stage("ir", c=c, n=n, s=s, k=3, t=t, act="relu6", place="ed",
                            residual=n > 1))
    return Genotype(stages=tuple(stages), stem=STEM, head=HEAD, width=width,
                    resolution=resolution, dropout=0.2)


REFERENCE = reference()

SPACE = SearchSpace(
    name="mnv2",
    description="MobileNetV2 inverted residuals: per stage t, k, n, c, activation "
                "placement, shortcut and activation; global width, resolution, stem, head",
    reference=REFERENCE,
    stages=tuple(
        StageChoices(
            block=("ir",),
            c=scaled_choices(c),
            n=repeat_choices(n),
            s=(s,),
            k=(3, 5, 7),
            t=(1, 3, 6),
            act=("relu6", "hswish"),
            place=("ed", "d", "edp"),
            residual=(True, False),
        )
        for t, c, n, s in TABLE
    ),
    stem=(STEM, (replace(STEM[0], c=16),)),
    head=(HEAD, (replace(HEAD[0], c=1024),)),
    width=(0.5, 0.75, 1.0, 1.4),
    resolution=(160, 192, 224),
    dropout=(0.2,),
)
