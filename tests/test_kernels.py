"""The analytic kernel list of a genotype is exactly what its built network runs."""

import pytest

from nas.arch import kernels as K
from nas.model.builder import build_model
from search_spaces import get_space, mnv2, xception
from tests.kernel_trace import traced_kernels


def _small(g):
    # Kernels do not depend on the input size beyond the keys' h, so test at a small one.
    from dataclasses import replace

    return replace(g, resolution=min(g.resolution, 64))


@pytest.mark.parametrize("space", ["mnv2", "xception", "mnv1"])
def test_kernels_match_the_traced_network_for_random_genotypes(space):
    sp = get_space(space)
    for seed in range(12):
        g = _small(sp.sample(seed))
        expected = traced_kernels(build_model(g, 10, 3), 3, g.resolution)
        assert K.genotype_kernels(g, 10, 3) == expected, f"seed {seed}: {g}"


@pytest.mark.parametrize("g", [mnv2.reference(), xception.reference()], ids=["mnv2", "xception"])
def test_kernels_match_the_traced_reference_networks(g):
    g = _small(g)
    assert K.genotype_kernels(g, 1000, 3) == traced_kernels(build_model(g, 1000, 3), 3, g.resolution)


def test_reference_mnv2_kernel_counts():
    ks = K.genotype_kernels(mnv2.reference(), 1000, 3)
    convs = [k for k in ks if k[0] == "conv"]
    # stem + 17 blocks (the first without expansion: 2 convs, the rest 3) + head conv
    assert len(convs) == 1 + 2 + 16 * 3 + 1
    assert sum(k[0] == "add" for k in ks) == 10
    assert ks[-2:] == [("pool", 1280, 7), ("linear", 1280, 1000)]


def test_kernel_text_round_trips_and_rejects_garbage():
    for k in K.genotype_kernels(xception.reference(), 1000, 3):
        assert K.from_text(K.to_text(k)) == k
    for bad in ("conv:1:2", "nope:1", ""):
        with pytest.raises(ValueError, match="not a kernel key"):
            K.from_text(bad)
