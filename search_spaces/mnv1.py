"""MobileNetV1 (Howard et al., 2017) and a space of depthwise-separable networks around it."""

from __future__ import annotations

from nas.arch.genotype import Genotype, Stage, StemLayer
from nas.arch.space import SearchSpace, StageChoices, repeat_choices, scaled_choices

__all__ = ["REFERENCE", "SPACE", "STEM", "TABLE", "reference"]

# (c, n, s): output channels 64, 128 s2, 128, 256 s2, 256, 512 s2, 512 x5, 1024 s2, 1024.
TABLE = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))

STEM = (StemLayer(c=32, k=3, s=2, p=1, act="relu"),)


def reference(width: float = 1.0, resolution: int = 224) -> Genotype:
    """MobileNetV1 at width multiplier `width` (alpha) and input `resolution` (rho)."""
    stages = tuple(Stage("ds", c=c, n=n, s=s, k=3, act="relu", place="dp") for c, n, s in TABLE)
    return Genotype(stages=stages, stem=STEM, head=(), width=width, resolution=resolution,
                    dropout=0.0)


REFERENCE = reference()

SPACE = SearchSpace(
    name="mnv1",
    description="MobileNetV1 depthwise-separable blocks: per stage k, n, c, activation "
                "placement, shortcut and activation; global width and resolution",
    reference=REFERENCE,
    stages=tuple(
        StageChoices(
            block=("ds",),
            c=scaled_choices(c),
            n=repeat_choices(n, 2 if n > 2 else 1),
            s=(s,),
            k=(3, 5),
            act=("relu", "relu6"),
            place=("dp", "p"),
            residual=(False, True),
        )
        for c, n, s in TABLE
    ),
    stem=(STEM,),
    head=((),),
    width=(0.25, 0.5, 0.75, 1.0),
    resolution=(128, 160, 192, 224),
    dropout=(0.0,),
)
