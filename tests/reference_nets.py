"""Independent, straightforward implementations of the three papers' networks.

Written from the papers' layer tables, with no code shared with `nas`, so that a
model built from a genotype can be compared with them output for output.
"""

from torch import nn
from torch.nn import functional as F


def _conv_bn(cin, cout, k, stride=1, groups=1, act=None, padding=None):
    pad = (k - 1) // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _div8(v):
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


class _V2Block(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = []
        if t != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(_conv_bn(hidden, cout, 1))
        self.body = nn.Sequential(*layers)
        self.identity = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.identity else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, alpha=1.0, classes=1000):
        super().__init__()
        rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
        c = _div8(32 * alpha)
        feats = [_conv_bn(3, c, 3, 2, act=nn.ReLU6)]
        for t, ch, n, s in rows:
            out = _div8(ch * alpha)
            for i in range(n):
                feats.append(_V2Block(c, out, s if i == 0 else 1, t))
                c = out
        last = _div8(1280 * max(1.0, alpha))
        feats.append(_conv_bn(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*feats)
        self.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class MobileNetV1(nn.Module):
    def __init__(self, alpha=1.0, classes=1000):
        super().__init__()
        plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
            [(1024, 2), (1024, 1)]
        c = _div8(32 * alpha) if alpha != 1 else 32
        layers = [_conv_bn(3, c, 3, 2, act=nn.ReLU)]
        for ch, s in plan:
            out = _div8(ch * alpha) if alpha != 1 else ch
            layers.append(_conv_bn(c, c, 3, s, groups=c, act=nn.ReLU))
            layers.append(_conv_bn(c, out, 1, act=nn.ReLU))
            c = out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


class _Sep(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.depth = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.point = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.point(self.depth(x))


class _XBlock(nn.Module):
    def __init__(self, cin, cout, reps, stride, relu_first=True, grow_first=True):
        super().__init__()
        if cin != cout or stride != 1:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.proj = None
        chans = ([(cin, cout)] + [(cout, cout)] * (reps - 1)) if grow_first else \
            ([(cin, cin)] * (reps - 1) + [(cin, cout)])
        layers = []
        for j, (a, b) in enumerate(chans):
            if j > 0 or relu_first:
                layers.append(nn.ReLU())
            layers += [_Sep(a, b), nn.BatchNorm2d(b)]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x) + (self.proj(x) if self.proj is not None else x)


class Xception(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.entry = nn.Sequential(
            _conv_bn(3, 32, 3, 2, act=nn.ReLU, padding=0), _conv_bn(32, 64, 3, 1, act=nn.ReLU, padding=0),
            _XBlock(64, 128, 2, 2, relu_first=False), _XBlock(128, 256, 2, 2), _XBlock(256, 728, 2, 2))
        self.middle = nn.Sequential(*[_XBlock(728, 728, 3, 1) for _ in range(8)])
        self.exit = nn.Sequential(
            _XBlock(728, 1024, 2, 2, grow_first=False),
            _Sep(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(),
            _Sep(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU())
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = self.exit(self.middle(self.entry(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
